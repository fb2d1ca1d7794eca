"""`keel.Secret`: credentials pass through workflows and tools by reference. The value
is read from its source by `.reveal()`, in every execution that needs it, and is never
journaled, traced, exported, logged or shown."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic_core
import pytest
from pydantic import BaseModel, TypeAdapter

import keel
from keel.engine.runtime import Settings
from keel.engine.serde import args_digest, revive, to_json
from tests.apps.harness import Harness
from tests.backends import at_rest
from tests.limits import WAIT
from tests.test_observe_redaction import span_store_text, trace_text

REF = {"$secret": "env:STRIPE_KEY"}


# -- the value type --------------------------------------------------------------------------


def test_a_secret_is_its_reference_everywhere_keel_writes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = "sk_live_" + secrets.token_hex(12)
    monkeypatch.setenv("STRIPE_KEY", value)
    s = keel.Secret.env("STRIPE_KEY")
    assert s.reveal() == value
    assert (s.ref, s.scheme, s.name) == ("env:STRIPE_KEY", "env", "STRIPE_KEY")
    assert repr(s) == str(s) == f"{s}" == "Secret('env:STRIPE_KEY')"

    class Charge(BaseModel):
        key: keel.Secret
        amount: int

    model = Charge(key=REF, amount=5)  # type: ignore[arg-type]
    assert model.key == s and hash(model.key) == hash(s)
    written = [
        pydantic_core.to_json({"args": [s], "nested": {"k": s}}),  # Keel's serde and store
        to_json(model, what="test"),
        model.model_dump_json().encode(),
        json.dumps(model.model_dump(mode="json")).encode(),
    ]
    for data in written:
        assert value.encode() not in data and b'{"$secret":"env:STRIPE_KEY"}' in data.replace(
            b" ", b""
        )
    assert revive({"$secret": "env:STRIPE_KEY"}, keel.Secret) == s
    assert TypeAdapter(keel.Secret).json_schema()["required"] == ["$secret"]
    assert Charge.model_json_schema()["properties"]["key"]["type"] == "object"
    # the digest is the reference's: rotating the value is not a different call
    before = args_digest((s, 5), {})
    monkeypatch.setenv("STRIPE_KEY", "sk_live_rotated")
    assert args_digest((keel.Secret.env("STRIPE_KEY"), 5), {}) == before
    assert keel.Secret.file("/run/secrets/stripe").ref == "file:/run/secrets/stripe"
    for bad in ("STRIPE_KEY", "env:", ":x", "Env:X"):
        with pytest.raises(keel.ConfigError, match="scheme:name"):
            keel.Secret(bad)


async def test_a_secret_input_takes_a_reference_never_a_value(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def pay(ctx: keel.Context, api_key: keel.Secret) -> str:
        return api_key.ref

    value = "sk_live_" + secrets.token_hex(12)
    for given in (value, {"$secret": value}, {"$secret": "env:X", "value": value}):
        with pytest.raises(keel.InputError) as refused:
            await app.start(pay, {"api_key": given})
        msg = refused.value.message
        assert "keel.Secret takes a reference" in msg or "scheme:name" in msg
        assert value not in msg and value not in json.dumps(refused.value.data)
    assert await app.list_runs() == []  # nothing was recorded
    handle = await app.start(pay, {"api_key": {"$secret": "env:NOT_NEEDED_HERE"}})
    assert await handle.result(WAIT) == "env:NOT_NEEDED_HERE"
    handle = await app.start(pay, {"api_key": keel.Secret.env("ALSO_FINE")})
    assert (await handle.info()).input == {"api_key": {"$secret": "env:ALSO_FINE"}}


async def test_sources_env_file_and_registered(
    make_app: Callable[..., keel.App], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    store: dict[str, str] = {"payments": "vault-value-1"}
    app.secrets.register("vault", store.get)
    (tmp_path / "db_password").write_text("file-value-1\n")
    monkeypatch.setenv("API_TOKEN", "env-value-1")
    got: list[str] = []

    @app.tool
    async def use(*keys: keel.Secret) -> int:
        got.extend(k.reveal() for k in keys)
        return len(keys)

    @app.workflow
    async def three(ctx: keel.Context, a: keel.Secret, b: keel.Secret, c: keel.Secret) -> int:
        return await ctx.call(use, a, b, c)  # type: ignore[no-any-return]

    refs = {
        "a": keel.Secret.env("API_TOKEN"),
        "b": keel.Secret.file(tmp_path / "db_password"),
        "c": keel.Secret("vault:payments"),
    }
    handle = await app.start(three, refs)
    assert await handle.result(WAIT) == 3
    assert got == ["env-value-1", "file-value-1", "vault-value-1"]
    assert app.secrets.resolve(refs["c"]) == "vault-value-1"
    # an allow-list: only the references it names resolve
    app.secrets.allow("env:API_*", f"file:{tmp_path}/*")
    assert app.secrets.resolve(refs["a"]) == "env-value-1"
    with pytest.raises(keel.SecretUnavailable, match=r"app\.secrets\.allow\('vault:payments'\)"):
        app.secrets.resolve(refs["c"])
    with pytest.raises(keel.ConfigError, match="scheme:name"):
        app.secrets.allow("STRIPE_*")
    with pytest.raises(keel.ConfigError, match="already has a resolver"):
        app.secrets.register("vault", dict().get)
    with pytest.raises(keel.ConfigError, match="lower-case"):
        app.secrets.register("Vault", store.get)


async def test_a_missing_source_is_a_clear_error_naming_the_reference(
    make_app: Callable[..., keel.App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MISSING_KEY", raising=False)
    app = make_app()

    @app.tool
    async def charge(api_key: keel.Secret) -> str:
        return api_key.reveal()[:0] + "ok"

    @app.workflow
    async def pay(ctx: keel.Context, api_key: keel.Secret) -> str:
        return await ctx.call(charge, api_key)  # type: ignore[no-any-return]

    for ref, says in (
        ("env:MISSING_KEY", "set environment variable MISSING_KEY for every process"),
        ("vault:stripe", "app.secrets.register('vault', resolver)"),
    ):
        handle = await app.start(pay, {"api_key": {"$secret": ref}})
        with pytest.raises(keel.RunFailed) as failed:
            await handle.result(WAIT)
        err = failed.value.error
        assert err is not None and err.type == "SecretUnavailable" and err.step == "charge#0"
        assert f"secret {ref}" in err.message and says in err.message
        assert err.data["ref"] == ref
    with pytest.raises(keel.SecretUnavailable, match="reads the secret from its source again"):
        keel.Secret.env("MISSING_KEY").reveal()


async def test_a_missing_secret_is_not_retried_and_a_failing_source_is(
    make_app: Callable[..., keel.App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value that is not there does not appear by waiting: not retried, even under a
    Retry. A resolver's exception (a network error) is the step's failure, retried like
    any other. A resolver returns a str or None."""
    monkeypatch.delenv("MISSING_KEY", raising=False)
    app = make_app()
    asked = {"n": 0}

    def vault(name: str) -> str | None:
        asked["n"] += 1
        if asked["n"] == 1:
            raise ConnectionError("vault unreachable")
        return f"{name}-value"

    app.secrets.register("vault", vault)
    app.secrets.register("numbers", lambda name: 42)  # type: ignore[arg-type,return-value]

    @app.tool(retry=keel.Retry(attempts=3, backoff=0.01, jitter=False))
    async def charge(api_key: keel.Secret) -> str:
        return api_key.reveal()

    @app.workflow
    async def pay(ctx: keel.Context, api_key: keel.Secret) -> str:
        return await ctx.call(charge, api_key)  # type: ignore[no-any-return]

    handle = await app.start(pay, {"api_key": {"$secret": "env:MISSING_KEY"}})
    with pytest.raises(keel.RunFailed) as failed:
        await handle.result(WAIT)
    err = failed.value.error
    assert err is not None and err.type == "SecretUnavailable" and err.attempts == 1
    handle = await app.start(pay, {"api_key": {"$secret": "vault:stripe"}})
    assert await handle.result(WAIT) == "stripe-value"
    [step] = await app.steps(handle.id)
    assert step.attempts == 2 and asked["n"] == 2
    with pytest.raises(keel.ConfigError, match="must return a str or None"):
        app.secrets.resolve(keel.Secret("numbers:x"))


# -- never stored, read again after a crash -------------------------------------------------


async def test_a_secret_survives_a_crash_and_is_never_stored_traced_or_exported(
    worker_harness: Harness, otlp_http: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = worker_harness
    module = "tests.apps.secret_app"
    stripe = "sk_live_Planted" + secrets.token_hex(10)
    db_password = "db-Planted-" + secrets.token_hex(10)
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    monkeypatch.delenv("STRIPE_KEY", raising=False)  # the starting process has neither
    creds = {"STRIPE_KEY": stripe, "TEST_VAULT_DB": db_password}
    app = h.app(module)
    handle = await app.start(
        "pay",
        {"api_key": {"$secret": "env:STRIPE_KEY"}, "db": {"$secret": "vault:db"}, "amount": 7},
        id="pay-1",
        execute=False,
    )
    revealed = h.data / "revealed.log"

    def reveals() -> list[str]:
        return revealed.read_text().splitlines() if revealed.exists() else []

    first = h.spawn(module, KEEL_TEST_BLOCK=WAIT * 4, **creds)
    await h.wait_until(lambda: len(reveals()) == 1, timeout=WAIT, what="charge", procs=[first])
    await h.kill(first, app, handle.id)  # mid-step: charge is in flight
    second = h.spawn(module, KEEL_TEST_BLOCK=0, **creds)
    info = await h.wait_status(app, handle.id, "SUCCEEDED", procs=[second])
    assert info.result == "charged 700 with Secret('env:STRIPE_KEY')"

    # the tool got the value both times, from the source, in each worker
    lines = [line.rsplit(" ", 1) for line in reveals()]
    assert [v for v, _ in lines] == [f"{stripe} {db_password}"] * 2
    assert [int(pid) for _, pid in lines] == [first.pid, second.pid]
    assert h.execution_counts()[f"{handle.id}:charge#0"] == 2

    # what Keel holds is the reference
    steps = {s.key: s for s in await app.steps(handle.id)}
    assert steps["charge#0"].input == {
        "api_key": {"$secret": "env:STRIPE_KEY"},
        "db": {"$secret": "vault:db"},
        "cents": 700,
    }
    h.terminate(second)
    spans = await app.trace(handle.id)
    exported = otlp_http.wait_for(
        lambda got: any(s.name == "execute_tool charge" for s in got)
    )
    charge_calls = [s for s in exported if s.name == "execute_tool charge"]
    assert json.loads(charge_calls[-1].attributes["gen_ai.tool.call.arguments"])["db"] == {
        "$secret": "vault:db"
    }

    def cli(*args: str) -> bytes:
        done = subprocess.run(
            [sys.executable, "-m", "keel.cli", *args],
            cwd=h.root,
            env=h.env(),
            capture_output=True,
            timeout=WAIT,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    places: dict[str, bytes] = {"the store at rest": at_rest(h.url)}  # file and WAL on SQLite
    assert places["the store at rest"]
    places["keel show --json"] = cli("show", handle.id, "--json")
    places["keel show --json --raw"] = cli("show", handle.id, "--json", "--raw")
    places["keel trace --json"] = cli("trace", handle.id, "--json")
    places["spans table"] = (await span_store_text(h.url, handle.id)).encode()
    places["trace as read"] = trace_text(spans).encode()
    places["OTLP payload"] = otlp_http.payload()
    places["worker stderr"] = b"".join(p.stderr_path.read_bytes() for p in h.procs)
    for where, data in places.items():
        for value in (stripe, db_password):
            assert value.encode() not in data, f"{value[:12]}... leaked in {where}"
    assert b"env:STRIPE_KEY" in places["keel show --json --raw"]


async def test_an_approval_edit_cannot_point_a_tool_at_another_secret(
    make_app: Callable[..., keel.App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMENTS_KEY", "pay-value")
    monkeypatch.setenv("ADMIN_KEY", "admin-value")
    app = make_app()
    used: list[tuple[str, int]] = []

    @app.tool(irreversible=True)
    async def refund(api_key: keel.Secret, cents: int) -> str:
        used.append((api_key.reveal(), cents))
        return "ok"

    @app.workflow
    async def back(ctx: keel.Context, api_key: keel.Secret) -> str:
        return await ctx.call(refund, api_key, 900)  # type: ignore[no-any-return]

    handle = await app.start(back, {"api_key": {"$secret": "env:PAYMENTS_KEY"}})
    await handle.settle(WAIT)
    [req] = await app.approvals.list()
    assert req.args == {"api_key": {"$secret": "env:PAYMENTS_KEY"}, "cents": 900}
    with pytest.raises(keel.InputError, match="cannot change which secrets a tool reads"):
        await app.approvals.edit(req.id, {"api_key": {"$secret": "env:ADMIN_KEY"}, "cents": 900})
    assert (await app.approvals.get(req.id)).status == "pending"
    await app.approvals.edit(req.id, {**(req.args or {}), "cents": 90}, by="ops")
    assert await handle.result(WAIT) == "ok"
    assert used == [("pay-value", 90)]


async def test_a_model_never_chooses_a_secret(store_url: str) -> None:
    from keel.llm import Gateway, Reply, ScriptedModel

    model = ScriptedModel(lambda m: Reply(content="done"))
    app = keel.App(
        store_url,
        settings=Settings(poll_interval=0.02),
        llm=Gateway({"m": model}, retry=keel.Retry(attempts=1)),
    )

    @app.tool
    async def charge(api_key: keel.Secret, cents: int) -> str:
        return "charged"

    @app.workflow
    async def agent(ctx: keel.Context) -> str:
        res = await ctx.llm.agent("refund order 42", tools=[charge])
        return res.content or ""

    try:
        handle = await app.start(agent, {})
        with pytest.raises(keel.RunFailed) as failed:
            await handle.result(WAIT)
    finally:
        await app.close()
    assert failed.value.error is not None and failed.value.error.type == "ConfigError"
    assert "a model must not choose which credentials" in failed.value.error.message
    assert not model.calls
