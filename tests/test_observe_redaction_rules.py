"""Redaction that cannot be sidestepped: arguments by parameter name (positional or
keyword), names matched however they are spelled, secrets inside free text, and one
per-App redactor (code or keel.toml) for everything Keel shows or exports."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.engine.runtime import Settings
from keel.errors import ConfigError
from keel.hitl import Approval
from keel.observe import RedactingFilter, Redactor, configure_logging
from keel.observe.logs import KEEL_LOGGERS
from keel.observe.redact import MASK, _required_literal
from tests.backends import fresh_url
from tests.limits import WAIT
from tests.test_observe_redaction import span_store_text, trace_text

PASSWORD = "Hunter2-Secret!"
SESSION = "sess-7Hq2LmZ9xW4kP0vB"
EMAIL = "ada.lovelace@example.org"
CARD = "4111 1111 1111 1111"  # Luhn-valid test Visa number


# -- tool arguments: positional and keyword alike ------------------------------------------


async def test_positional_and_keyword_arguments_are_redacted_alike(
    otlp_http: Any, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    app = keel.App(store_url, settings=Settings(poll_interval=0.02))

    @app.tool
    async def login(user: str, password: str, session_token: str = "") -> str:
        return f"welcome {user}"

    @app.workflow
    async def sign_in(ctx: keel.Context) -> list[str]:
        return [
            await ctx.call(login, "bob", PASSWORD),
            await ctx.call(login, user="bob", password=PASSWORD),
            await ctx.call(login, "bob", PASSWORD, SESSION),
        ]

    try:
        handle = await app.start(sign_in, {})
        assert await handle.result(WAIT) == ["welcome bob"] * 3
        spans = await app.trace(handle.id)
        journal = {r.key: r for r in await app.steps(handle.id)}
    finally:
        await app.close()

    # journaled by parameter name: the positional call reads like the keyword one
    assert journal["login#0"].input == journal["login#1"].input == {
        "user": "bob",
        "password": PASSWORD,
    }
    assert journal["login#2"].input["session_token"] == SESSION
    texts = [trace_text(spans), await span_store_text(store_url, handle.id)]
    by_key = {s.attributes.get("keel.step.key"): s for s in spans}
    for key in ("login#0", "login#1", "login#2"):
        step = by_key[key]
        [call] = [s for s in spans if s.parent_id == step.span_id]
        args = json.loads(call.attributes["gen_ai.tool.call.arguments"])
        assert args["user"] == "bob" and args["password"] == MASK
        assert json.loads(step.attributes["keel.step.input"])["password"] == MASK
    assert json.loads(by_key["login#2"].attributes["keel.step.input"])["session_token"] == MASK
    received = otlp_http.wait_for(lambda got: len(got) >= len(spans))
    texts += [otlp_http.payload().decode(errors="replace"), repr([r.attributes for r in received])]
    exported = [r for r in received if r.attributes.get("gen_ai.tool.name") == "login"]
    assert len(exported) == 3
    assert all(
        json.loads(r.attributes["gen_ai.tool.call.arguments"])["password"] == MASK
        for r in exported
    )
    for text in texts:
        assert PASSWORD not in text and SESSION not in text


# -- names, however spelled -----------------------------------------------------------------


def test_field_names_are_normalised_and_globs_match() -> None:
    r = Redactor(fields=["*_pin", "ssn"])
    shown = r.value(
        {
            "session_token": "a",
            "sessionToken": "b",
            "SESSION-TOKEN": "c",
            "X-Api-Key": "d",
            "apiKey": "e",
            "client_secret": "f",
            "db_password_hash": "g",
            "http.request.header.authorization": "h",
            "card_pin": "1234",
            "SSN": "078-05-1120",
            "credentials": {"user": "u", "pass": "p"},
            # not secrets: counts and ordinary names
            "max_tokens": 200,
            "input_tokens": 12,
            "tokens": ["a", "b"],
            "keyboard": "qwerty",
            "author": "ada",
            "idempotency_key": "run:step",
        }
    )
    masked = {k for k, v in shown.items() if v == MASK}
    assert masked == {
        "session_token",
        "sessionToken",
        "SESSION-TOKEN",
        "X-Api-Key",
        "apiKey",
        "client_secret",
        "db_password_hash",
        "http.request.header.authorization",
        "card_pin",
        "SSN",
        "credentials",
    }
    assert shown["max_tokens"] == 200 and shown["keyboard"] == "qwerty"
    assert r.sensitive("Refresh-Token") and not r.sensitive("token_count")


def test_a_json_schemas_property_names_are_not_masked() -> None:
    """A tool's `args_schema` describes a `password` parameter and holds no password:
    its property names stay (a reviewer sees what the tool takes); values in it do not."""
    r = Redactor()
    schema = {
        "type": "object",
        "properties": {"password": {"type": "string", "title": "Password"}, "user": {}},
        "required": ["password"],
    }
    assert r.value({"args_schema": schema}) == {"args_schema": schema}
    leaky = {"type": "object", "properties": {"token": {"default": "sk-proj-" + "a" * 20}}}
    assert r.value(leaky)["properties"] == {"token": {"default": MASK}}


def test_secrets_inside_free_text() -> None:
    r = Redactor()
    cases = {
        "login with password=hunter2 please": f"login with password={MASK} please",
        "PASSWORD: hunter2": f"PASSWORD: {MASK}",
        'config {"api_key": "abc123", "user": "bob"}': (
            f'config {{"api_key": "{MASK}", "user": "bob"}}'
        ),
        "params {'client_secret': 'zz9'}": f"params {{'client_secret': '{MASK}'}}",
        "Authorization: Basic dXNlcjpwYXNz": f"Authorization: Basic {MASK}",
        "curl -H 'X-Api-Key: 8f7e6d5c' https://api": f"curl -H 'X-Api-Key: {MASK}' https://api",
        "GET /cb?session_token=Zx81&next=/home": f"GET /cb?session_token={MASK}&next=/home",
        "escaped {\\\"password\\\": \\\"pw1\\\"}": f'escaped {{\\"password\\": \\"{MASK}\\"}}',
        "dsn postgres://app:s3cr3t@db:5432/x": f"dsn postgres://app:{MASK}@db:5432/x",
        "stripe sk_live_51HxAbCdEfGhIjKlMn": f"stripe {MASK}",
        f"pay with {CARD} today": f"pay with {MASK} today",
        "key -----BEGIN PRIVATE KEY-----\nMIIEv\n-----END PRIVATE KEY----- end": (
            f"key {MASK} end"
        ),
        # left alone: no value, not a secret's name, not a card (Luhn), a timestamp
        "password: null": "password: null",
        "max_tokens=200, temperature: 0.2": "max_tokens=200, temperature: 0.2",
        "order 4111 1111 1111 1112 shipped": "order 4111 1111 1111 1112 shipped",
        "at 1765100000000 ms": "at 1765100000000 ms",
    }
    for text, shown in cases.items():
        assert r.text(text) == shown, text
    assert r.value({"n": 4111111111111111, "m": 4111111111111112}) == {
        "n": MASK,
        "m": 4111111111111112,
    }


def test_custom_rules_and_their_pre_check() -> None:
    r = Redactor(patterns=[Redactor.EMAIL, r"ACME-\d{6}"], fields=["ssn"])
    assert r.text(f"mail {EMAIL} re ACME-123456, ssn=078-05-1120") == (
        f"mail {MASK} re {MASK}, ssn={MASK}"
    )
    # a literal every match contains gates each custom regex (clean text skips it)
    assert _required_literal(re.compile(r"ACME-\d{6}")) == ("ACME-", False)
    assert _required_literal(re.compile(Redactor.EMAIL)) == ("@", False)
    assert _required_literal(re.compile(r"(?i)acct-\d+")) == ("acct-", True)
    assert _required_literal(re.compile(r"\d{3}-\d{2}")) == ("-", False)
    assert _required_literal(re.compile(r"a|b")) == (None, False)  # runs on every string
    assert Redactor(patterns=[r"a|b"]).text("cab") == f"c{MASK}{MASK}"
    # defaults=False: only your rules
    bare = Redactor(defaults=False, fields=["ssn"])
    assert bare.text("password=x ssn=y sk-proj-" + "a" * 20) == (
        f"password=x ssn={MASK} sk-proj-{'a' * 20}"
    )
    with pytest.raises(ConfigError, match="not a valid regex"):
        Redactor(patterns=["(unclosed"])
    with pytest.raises(ConfigError, match="non-empty name or glob"):
        Redactor(fields=["*"])


def test_keel_toml_configures_the_redactor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keel.toml").write_text(
        '[keel.redact]\nfields = ["*_pin"]\npatterns = [\'ACME-\\d{6}\']\nemail = true\n'
    )
    app = keel.App(fresh_url(tmp_path, "k"))
    assert app.redactor.text(f"{EMAIL} ACME-123456 card_pin=1234 password=x") == (
        f"{MASK} {MASK} card_pin={MASK} password={MASK}"
    )
    (tmp_path / "keel.toml").write_text("[keel.redact]\nfeilds = []\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) feilds"):
        _ = keel.App(fresh_url(tmp_path, "k")).redactor
    with pytest.raises(ConfigError, match=r"redactor= takes a keel\.Redactor"):
        keel.App(fresh_url(tmp_path, "k"), redactor=lambda v: v)  # type: ignore[arg-type]


# -- one redactor per App, everywhere ----------------------------------------------------


async def test_the_apps_redactor_is_used_for_traces_errors_logs_and_notifications(
    store_url: str,
) -> None:
    seen: list[dict[str, Any]] = []
    app = keel.App(
        store_url,
        settings=Settings(poll_interval=0.02),
        redactor=Redactor(patterns=[Redactor.EMAIL], fields=["ssn"]),
        notify=seen.append,
    )

    @app.tool(irreversible=True, approval=Approval(queue="ops"))
    async def notify_customer(email: str, ssn: str, body: str) -> str:
        return "sent"

    @app.workflow
    async def contact(ctx: keel.Context, email: str) -> str:
        return await ctx.call(notify_customer, email, "078-05-1120", f"Hi {email}")  # type: ignore[no-any-return]

    try:
        handle = await app.start(contact, {"email": EMAIL}, id="c1")
        info = await handle.settle(WAIT)
        assert info.status is keel.RunStatus.WAITING
        # starting the id again with other input: the error shows both, redacted
        with pytest.raises(keel.InputError) as refused:
            await app.start(contact, {"email": "grace@example.org"}, id="c1")
        assert EMAIL not in str(refused.value.data) and "grace@" not in refused.value.message
        assert MASK in refused.value.message
        # the notification callable gets the request as the redactor shows it
        assert len(seen) == 1
        args = seen[0]["request"]["action"]["args"]
        assert args == {"email": MASK, "ssn": MASK, "body": f"Hi {MASK}"}
        assert EMAIL not in json.dumps(seen) and "078-05-1120" not in json.dumps(seen)
        [req] = await app.approvals.list()
        await app.approvals.approve(req.id, by="ops")
        assert await handle.result(WAIT) == "sent"
        spans = await app.trace("c1")
    finally:
        await app.close()
    text = trace_text(spans)
    assert EMAIL not in text and "078-05-1120" not in text


async def test_an_edit_keeps_the_arguments_the_reviewer_saw_masked(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    calls: list[tuple[str, str, int]] = []

    @app.tool(irreversible=True)
    async def transfer(account: str, password: str, amount: int) -> str:
        calls.append((account, password, amount))
        return "ok"

    @app.workflow
    async def move(ctx: keel.Context) -> str:
        return await ctx.call(transfer, "acct-1", PASSWORD, 500)  # type: ignore[no-any-return]

    handle = await app.start(move, {})
    await handle.settle(WAIT)
    [req] = await app.approvals.list()
    shown = app.redactor.review(req)
    assert shown.args == {"account": "acct-1", "password": MASK, "amount": 500}
    # the reviewer edits the amount and sends back what they saw
    await app.approvals.edit(req.id, {**(shown.args or {}), "amount": 50}, by="ops")
    assert await handle.result(WAIT) == "ok"
    assert calls == [("acct-1", PASSWORD, 50)]


def test_logs_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.redaction.logs")
    logger.propagate = False
    handler = configure_logging("INFO", logger=logger, redactor=Redactor(fields=["ssn"]))
    handler.setStream(stream)  # type: ignore[attr-defined]
    try:
        logger.info("login password=%s ssn=%s", PASSWORD, "078-05-1120")
        try:
            raise RuntimeError(f"rejected Authorization: Bearer {SESSION}")
        except RuntimeError:
            logger.exception("call failed")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == f"login password={MASK} ssn={MASK}"
    assert "Bearer [REDACTED]" in lines[1]["exception"]
    assert PASSWORD not in stream.getvalue() and SESSION not in stream.getvalue()
    # a filter on any handler does the same for plain-text logs
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s", (SESSION,), None)
    assert RedactingFilter().filter(record) and record.getMessage() == f"token={MASK}"


# -- the CLI shows what the redactor shows ---------------------------------------------------


async def test_keel_show_is_redacted_unless_raw(tmp_path: Path, store_url: str) -> None:
    app = keel.App(store_url, settings=Settings(poll_interval=0.02))

    @app.tool
    async def login(user: str, password: str) -> str:
        raise PermissionError(f"user {user} with password={password} locked")

    @app.workflow
    async def sign_in(ctx: keel.Context, email: str) -> str:
        return await ctx.call(login, email, PASSWORD)  # type: ignore[no-any-return]

    handle = await app.start(sign_in, {"email": EMAIL}, id="s1")
    with pytest.raises(keel.RunFailed):
        await handle.result(WAIT)
    await app.close()
    (tmp_path / "keel.toml").write_text("[keel.redact]\nemail = true\n")

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "keel.cli", *args],
            cwd=tmp_path,
            env={**_env(), "KEEL_STORE": store_url},
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    for args in (("show", "s1", "--json"), ("show", "s1"), ("runs", "--json"), ("runs",)):
        out = cli(*args)
        assert PASSWORD not in out and EMAIL not in out, args
    data = json.loads(cli("show", "s1", "--json"))
    [step] = data["steps"]
    assert step["input"] == {"user": MASK, "password": MASK}
    assert MASK in data["error"]["message"]
    raw = json.loads(cli("show", "s1", "--json", "--raw"))
    assert raw["steps"][0]["input"] == {"user": EMAIL, "password": PASSWORD}


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}


async def test_keels_own_log_records_are_masked(
    make_app: Callable[..., keel.App], caplog: pytest.LogCaptureFixture
) -> None:
    """A failing hook's traceback quotes what it choked on; Keel's logger masks it before
    any handler (here pytest's) sees the record."""
    app = make_app()

    class Audit(keel.Hooks):
        def step_recorded(self, ev: keel.StepEvent) -> None:
            raise ValueError(f"cannot audit login with password={PASSWORD}")

    app.hooks.add(Audit())

    @app.tool
    async def login(user: str) -> str:
        return user

    @app.workflow
    async def sign_in(ctx: keel.Context) -> str:
        return await ctx.call(login, "bob")  # type: ignore[no-any-return]

    with caplog.at_level(logging.ERROR, logger="keel.hooks"):
        assert await (await app.start(sign_in, {})).result(WAIT) == "bob"
    failures = [r for r in caplog.records if r.name == "keel.hooks"]
    assert failures, "the hook's failure was logged"
    assert all(PASSWORD not in (r.getMessage() + (r.exc_text or "")) for r in failures)
    assert f"password={MASK}" in (failures[0].exc_text or "")
    assert PASSWORD not in caplog.text


def test_every_logger_keel_writes_to_is_masked() -> None:
    """A logger's filters see only records made on that logger, not its children's: so
    each logger Keel's code names must be in the list the App masks (a new one, or a
    `getLogger(__name__)`, would log unmasked)."""
    root = Path(keel.__file__).parent
    named: dict[str, str] = {}  # getLogger's argument -> a module that passes it
    for path in root.rglob("*.py"):
        for arg in re.findall(r"getLogger\(([^)]*)\)", path.read_text()):
            named.setdefault(arg.strip("\"'"), str(path.relative_to(root)))
    unmasked = {n: m for n, m in named.items() if n.startswith("keel") and n not in KEEL_LOGGERS}
    assert "keel.worker" in named and not unmasked, unmasked
    assert "__name__" not in named, named.get("__name__")
