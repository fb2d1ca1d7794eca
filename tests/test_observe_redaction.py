"""Redaction and size limits: secrets never reach the trace store or an OTLP payload,
long values are truncated with a marker, and the journal keeps every output as it was
(replay needs it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel.engine.runtime import Settings
from keel.llm import Gateway, ScriptedModel
from keel.observe import Redactor
from keel.observe.ids import hex_span, hex_trace, trace_id
from keel.observe.redact import MASK
from keel.store import open_store
from keel.types import StepKind
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)
API_KEY = "sk-proj-" + "Q7fA2kLm9Xz" * 3 + "Pq8Rt3Vw1"  # 8 + 40 characters
PROMPT_KEY = "sk-proj-" + "Zb4Nc8Hd0Ue" * 3 + "Ws2Yt6Ka5"
PASSWORD = "correct-horse-battery-staple"
BEARER = "Bearer abcDEF0123456789ghiJKL"
SECRETS = (API_KEY, PROMPT_KEY, PASSWORD, BEARER.split()[1])


async def span_store_text(store_url: str, run_id: str) -> str:
    """Every field of every span the trace store holds for the run (execution and root
    spans: the spans of steps are built from the journal when a trace is read or
    exported), read through the store's span interface."""
    store = open_store(store_url)
    try:
        rows = await store.load_spans(hex_trace(trace_id(run_id)))
    finally:
        await store.close()
    assert rows
    return "\n".join(repr(dataclasses.astuple(r)) for r in rows)


def trace_text(spans: list[Any]) -> str:
    """Every field of every span of a trace as read (what `keel trace` could ever show)."""
    assert spans
    return "\n".join(repr(dataclasses.astuple(s)) for s in spans)


def assert_no_secrets(text: str | bytes) -> None:
    for secret in SECRETS:
        needle = secret.encode() if isinstance(text, bytes) else secret
        assert needle not in text, f"{secret[:12]}... leaked"


async def test_planted_secrets_never_reach_the_trace_store_or_otlp(
    otlp_http: Any, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the worst case for export: message content opted in
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    model = ScriptedModel(lambda m: f"Noted. Rotate {PROMPT_KEY} soon.")
    app = keel.App(
        store_url,
        settings=Settings(poll_interval=0.02),
        llm=Gateway({"m": model}, retry=keel.Retry(attempts=1)),
    )

    class Login(BaseModel):
        user: str
        password: str

    @app.tool
    async def read_config(name: str) -> dict[str, Any]:
        return {"service": name, "note": f"billing uses {API_KEY}", "owner": "ops"}

    @app.tool
    async def login(creds: dict[str, Any], retry_with: Login) -> str:
        return f"session for {creds['user']}"

    @app.tool(
        retry=keel.Retry(attempts=2, backoff=0.001), fallback=keel.Fallback.degrade(default="n/a")
    )
    async def call_api(path: str) -> str:
        raise ConnectionError(f"401 from {path} with Authorization: {BEARER}")  # retried

    @app.workflow
    async def leaky(ctx: keel.Context, account: dict[str, Any]) -> list[Any]:
        cfg = await ctx.call(read_config, "billing")
        session = await ctx.call(
            login,
            {"user": "ada", "password": PASSWORD},
            Login(user="ada", password=PASSWORD),
        )
        reply = await ctx.llm.text(f"Config: OPENAI_API_KEY={PROMPT_KEY}. Summarise: {cfg}")
        api = await ctx.call(call_api, "/v1/invoices")
        return [cfg["note"], session, reply, api]

    account = {"user": "ada", "password": PASSWORD, "note": f"deploy with {API_KEY}"}
    try:
        handle = await app.start(leaky, {"account": account})
        out = await handle.result(RESULT)
        spans = await app.trace(handle.id)
        journal = await app.steps(handle.id)
    finally:
        await app.close()

    # the run itself saw every value as it was
    assert out[0] == f"billing uses {API_KEY}" and out[1] == "session for ada"
    assert PROMPT_KEY in out[2] and out[3] == "n/a"

    # never in the spans table (the root and the execution span: every column)...
    stored = await span_store_text(store_url, handle.id)
    assert_no_secrets(stored)
    [root] = [s for s in spans if s.parent_id is None]
    assert root.attributes["keel.run.input"] == (
        f'{{"account": {{"user": "ada", "password": "{MASK}", "note": "deploy with {MASK}"}}}}'
    )
    assert MASK in stored
    # ... nor in the trace as read, built from the journal: every attribute, event,
    # status message of every step, tool call and model call span
    assert_no_secrets(trace_text(spans))
    by_key = {s.attributes.get("keel.step.key"): s for s in spans}
    assert by_key["read_config#0"].attributes["keel.step.output"] == (
        f'{{"service": "billing", "note": "billing uses {MASK}", "owner": "ops"}}'
    )
    login_input = by_key["login#0"].attributes["keel.step.input"]
    assert login_input.count(f'"password": "{MASK}"') == 2  # the dict and the model
    assert '"user": "ada"' in login_input  # only the secret field is masked
    [chat] = [s for s in spans if s.kind == "CLIENT"]
    assert f"OPENAI_API_KEY={MASK}" in chat.attributes["gen_ai.input.messages"]
    assert f"Rotate {MASK} soon" in chat.attributes["gen_ai.output.messages"]
    [event] = by_key["call_api#0"].events
    assert MASK in event["attributes"]["error.message"]
    # both attempts' tool calls failed: the first from the journal's attempt log
    api_calls = sorted(
        (s for s in spans if s.parent_id == by_key["call_api#0"].span_id),
        key=lambda s: s.attributes["keel.attempt"],
    )
    assert [c.status for c in api_calls] == ["ERROR", "ERROR"]
    for c in api_calls:
        assert c.status_message == (
            f"ConnectionError: 401 from /v1/invoices with Authorization: Bearer {MASK}"
        )

    # never in the OTLP payload (decoded at the receiver, and the raw bytes)
    received = otlp_http.wait_for(lambda got: len(got) >= len(spans))
    assert sorted(r.span_id for r in received) == sorted(hex_span(s.span_id) for s in spans)
    assert_no_secrets(otlp_http.payload())
    assert_no_secrets(repr([(r.attributes, r.events, r.status_message) for r in received]))
    [exported_chat] = [r for r in received if r.kind == "CLIENT"]
    assert f"OPENAI_API_KEY={MASK}" in exported_chat.attributes["gen_ai.input.messages"]

    # the journal keeps step outputs exactly as they were: replay needs them
    recs = {r.key: r for r in journal}
    assert recs["read_config#0"].output["note"] == f"billing uses {API_KEY}"
    # ... and what a trace is built from as it was: tool arguments, failed attempts
    assert recs["login#0"].input is not None and PASSWORD in repr(recs["login#0"].input)
    [failed] = recs["call_api#0"].attempt_log or []
    assert BEARER in failed["message"]
    [llm] = [r for r in journal if r.kind is StepKind.LLM]
    assert PROMPT_KEY in llm.output["request"]["messages"][0]["content"]
    assert PROMPT_KEY in llm.output["content"]


async def test_failed_run_error_messages_are_redacted(
    make_app: Callable[..., keel.App], store_url: str
) -> None:
    app = make_app()

    @app.tool
    async def charge(amount: int) -> str:
        raise RuntimeError(f"gateway rejected key {API_KEY} ({BEARER})")

    @app.workflow
    async def pay(ctx: keel.Context) -> str:
        return await ctx.call(charge, 5)  # type: ignore[no-any-return]

    handle = await app.start(pay, {})
    with pytest.raises(keel.RunFailed):
        await handle.result(WAIT)
    spans = await app.trace(handle.id)
    assert_no_secrets(trace_text(spans))  # a one-execution run stores no spans: all are built
    root = next(s for s in spans if s.parent_id is None)
    assert root.status == "ERROR" and root.attributes["keel.error.step"] == "charge#0"
    assert root.status_message == f"RuntimeError: gateway rejected key {MASK} ({MASK})"
    # the run's own record keeps the error as raised
    assert API_KEY in ((await app.get_run(handle.id)).error.message)  # type: ignore[union-attr]


async def test_long_values_are_truncated_with_a_marker_and_kept_in_the_journal(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app(trace_max_chars=1000)

    @app.tool
    async def report(n: int) -> str:
        return "z" * n

    @app.tool
    async def table(rows: int) -> list[dict[str, Any]]:
        return [{"row": i, "text": "cell " * 20} for i in range(rows)]

    @app.workflow
    async def big(ctx: keel.Context, n: int) -> int:
        text = await ctx.call(report, n)
        data = await ctx.call(table, 100)
        return len(text) + len(data)

    handle = await app.start(big, {"n": 10_000})
    assert await handle.result(WAIT) == 10_100
    spans = await app.trace(handle.id)
    by_key = {s.attributes.get("keel.step.key"): s for s in spans}

    out = by_key["report#0"].attributes["keel.step.output"]
    assert out == "z" * 1000 + "…[truncated 9000 chars; full value in the journal]"
    [call] = [s for s in spans if s.parent_id == by_key["report#0"].span_id]
    assert call.attributes["gen_ai.tool.call.result"] == out
    rows = by_key["table#0"].attributes["keel.step.output"]
    assert rows.startswith('[{"row": 0, "text": "cell cell ')
    assert rows.endswith("; full value in the journal]") and len(rows) < 1100
    # every stored attribute is bounded
    for s in spans:
        for v in s.attributes.values():
            assert len(str(v)) < 1100

    journal = {r.key: r for r in await app.steps(handle.id)}
    assert journal["report#0"].output == "z" * 10_000
    assert len(journal["table#0"].output) == 100


def test_redactor_patterns_fields_and_limits() -> None:
    r = Redactor(patterns=[r"ACME-\d{6}"], fields=["ssn"], max_chars=64)
    samples = {
        "openai": "sk-proj-" + "a1" * 20,
        "anthropic": "sk-ant-api03-" + "b2" * 20,
        "aws": "AKIA" + "ABCDEFGHIJKLMNOP",
        "github": "ghp_" + "c3" * 18,
        "slack": "xoxb-1234567890-abcdef",
        "google": "AIza" + "d" * 35,
        "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
        "custom": "ACME-123456",
    }
    for name, secret in samples.items():
        assert r.text(f"x {secret} y") == f"x {MASK} y", name
    assert r.text({"Authorization": "Bearer whatever-token-1234", "ssn": "078-05-1120"}) == (
        f'{{"Authorization": "{MASK}", "ssn": "{MASK}"}}'
    )
    assert r.value({"password": "", "token": None, "nested": [{"secret": 1}]}) == {
        "password": "",
        "token": None,
        "nested": [{"secret": MASK}],
    }
    long = r.text("q" * 100)
    assert long == "q" * 64 + "…[truncated 36 chars; full value in the journal]"
    assert r.text("short") == "short"


def test_json_values_are_cut_inside_and_stay_valid_json() -> None:
    """Messages and tool arguments over the limit keep their JSON structure: the long
    strings are cut (with the marker), roles, types and ids are whole, secrets masked."""
    import json

    r = Redactor(max_chars=700)
    messages = [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief. " * 30}]},
        {"role": "user", "parts": [{"type": "text", "content": f"key {API_KEY} " + "x" * 900}]},
        {
            "role": "tool",
            "parts": [
                {
                    "type": "tool_call_response",
                    "id": "call_1",
                    "response": {"password": PASSWORD, "rows": "y" * 500},
                }
            ],
        },
    ]
    text = r.json_text(messages)
    assert len(text) <= 700
    cut = json.loads(text)  # valid JSON
    assert [m["role"] for m in cut] == ["system", "user", "tool"]
    assert [m["parts"][0]["type"] for m in cut] == ["text", "text", "tool_call_response"]
    assert cut[2]["parts"][0]["id"] == "call_1"
    assert cut[2]["parts"][0]["response"]["password"] == MASK
    assert cut[1]["parts"][0]["content"].startswith(f"key {MASK} xxx")
    assert "chars; full value in the journal]" in cut[1]["parts"][0]["content"]
    assert API_KEY not in text and PASSWORD not in text
    # under the limit: the plain JSON, redacted
    assert json.loads(r.json_text({"user": "bob", "password": PASSWORD})) == {
        "user": "bob",
        "password": MASK,
    }
