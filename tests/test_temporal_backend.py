"""The Temporal backend's edges: its URL, idempotent starts, bad input, what it refuses
yet, and that `import keel` never imports temporalio (docs/temporal.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel.backends.temporal import Backend, from_env, result, start
from tests.limits import WAIT
from tests.temporal_run import OnTemporal, on_temporal

ROOT = Path(__file__).resolve().parents[1]

# -- the URL (no server) ---------------------------------------------------------------


def test_a_url_gives_address_namespace_and_task_queue() -> None:
    b = Backend.from_url("temporal://tmp.example:7234/prod?task_queue=agents")
    assert b == Backend("tmp.example:7234", "prod", "agents")
    assert Backend.from_url(b.url) == b
    assert Backend.from_url("temporal://localhost") == Backend("localhost:7233", "default", "keel")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgres://localhost:7233/default", "is not a Temporal URL (scheme 'postgres')"),
        ("temporal:///default", "names no host"),
        ("temporal://localhost:port/default", "has a bad port"),
        ("temporal://localhost:7233/a/b", "the path is the namespace, one segment"),
        ("temporal://localhost:7233/default?queue=x", "unknown option(s) queue"),
        ("temporal://localhost:7233/default?task_queue=", "give task_queue once, non-empty"),
    ],
)
def test_a_bad_url_says_what_is_wrong_and_how_to_write_it(url: str, says: str) -> None:
    with pytest.raises(keel.ConfigError) as caught:
        Backend.from_url(url)
    assert says in str(caught.value)
    assert "temporal://host:7233/namespace?task_queue=queue" in str(caught.value)


def test_keel_backend_env_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_BACKEND", raising=False)
    assert from_env() is None
    monkeypatch.setenv("KEEL_BACKEND", "temporal://h:1/ns?task_queue=q")
    assert from_env() == Backend("h:1", "ns", "q")


def test_an_empty_field_is_refused() -> None:
    with pytest.raises(keel.ConfigError, match=r"Backend\(task_queue=...\) must be a non-empty"):
        Backend(task_queue=" ")


def test_import_keel_and_the_backend_never_import_temporalio() -> None:
    code = (
        "import sys, keel, keel.backends.temporal; "
        "print('temporalio' in sys.modules or 'temporalio.client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_temporal_port_implements_every_member_of_the_execution_port() -> None:
    from keel.backends.temporal.port import TemporalExecution
    from keel.engine.port import ExecutionPort

    members = [n for n in dir(ExecutionPort) if not n.startswith("_") and n not in dir(object)]
    assert {"run", "operation", "step", "value", "wait_signal", "map", "phase"} <= set(members)
    assert [n for n in members if not hasattr(TemporalExecution, n)] == []


# -- on the dev server -----------------------------------------------------------------

_effects: list[str] = []


async def charge(order: str, cents: int) -> str:
    _effects.append(order)
    return f"charged {order} {cents}"


async def unregistered(x: int) -> int:
    return x


async def checkout(ctx: keel.Context, order: str) -> str:
    receipt = await ctx.call(charge, order, 250)
    await ctx.wait_for("shipped", timeout=600)
    return str(receipt)


async def uses_unregistered(ctx: keel.Context) -> int:
    return int(await ctx.call(unregistered, 1))


async def takes_days(ctx: keel.Context) -> str:
    began = ctx.now()
    await ctx.sleep(2 * 86400)
    try:
        await ctx.wait_for("approve", timeout=3 * 86400)
    except keel.SignalTimeout as exc:
        return f"{(ctx.now() - began).days} days later: {exc.message}"
    return "approved"


class Cart(BaseModel):
    items: list[str] = []


async def shopping(ctx: keel.Context, item: str) -> list[str]:
    ctx.state.items.append(item)
    more = await ctx.wait_for("add", timeout=600)
    ctx.state.items.append(more)
    return list(ctx.state.items)


async def huge(n: int) -> str:
    return "x" * n


async def too_big(ctx: keel.Context, where: str) -> Any:
    if where == "output":
        return await ctx.call(huge, 3 * 1024 * 1024)
    if where == "arguments":
        return await ctx.call(huge, "y" * 3 * 1024 * 1024)
    return "z" * 3 * 1024 * 1024


async def uses_llm(ctx: keel.Context) -> Any:
    return await ctx.llm.text("hi")


@pytest.fixture
async def temporal(temporal_address: str, store_url: str) -> AsyncIterator[OnTemporal]:
    app = keel.App(store_url)
    app.tool(charge)
    app.tool(huge)
    app.workflow(state=Cart)(shopping)
    for wf in (
        checkout,
        uses_unregistered,
        uses_llm,
        takes_days,
        too_big,
    ):
        app.workflow(wf)
    async with on_temporal(app, temporal_address) as t:
        yield t
    await app.close()


async def test_starting_a_run_twice_is_idempotent(temporal: OnTemporal) -> None:
    """The run id is the workflow id: a second start, while the run waits and after it
    finished, is that same run; its tool ran once."""
    from keel.backends.temporal import signal

    t = temporal
    order = f"o-{uuid.uuid4().hex[:8]}"
    rid = await start(t.app, t.client, t.backend, "checkout", {"order": order}, run_id=order)
    assert rid == order
    again = await start(t.app, t.client, t.backend, "checkout", {"order": order}, run_id=order)
    assert again == order
    await signal(t.client, rid, "shipped")
    assert await result(t.app, t.client, rid) == f"charged {order} 250"
    after = await start(t.app, t.client, t.backend, "checkout", {"order": order}, run_id=order)
    assert after == order
    assert await result(t.app, t.client, rid) == f"charged {order} 250"
    assert _effects.count(order) == 1
    attach = await start(t.app, t.client, t.backend, "checkout", None, run_id=order)
    assert attach == order  # no input: the first start's input stands
    with pytest.raises(keel.InputError, match=r"already exists .* with different input"):
        await start(t.app, t.client, t.backend, "checkout", {"order": "other"}, run_id=order)
    with pytest.raises(keel.ConfigError, match="already belongs to workflow 'checkout'"):
        await start(t.app, t.client, t.backend, "uses_llm", {}, run_id=order)


async def test_bad_input_is_refused_before_anything_starts(temporal: OnTemporal) -> None:
    t = temporal
    rid = f"bad-{uuid.uuid4().hex[:8]}"
    with pytest.raises(keel.InputError, match="input for workflow 'checkout' is invalid"):
        await start(t.app, t.client, t.backend, "checkout", {"order": 5, "x": 1}, run_id=rid)
    with pytest.raises(keel.InputError, match="contains a space"):
        await start(t.app, t.client, t.backend, "checkout", {"order": "o"}, run_id="a b")
    from temporalio.service import RPCError

    with pytest.raises(RPCError):  # nothing was started under that id
        await t.client.get_workflow_handle(rid).describe()


@pytest.mark.parametrize(
    ("workflow", "error", "says"),
    [
        ("uses_unregistered", "ConfigError", "a tool must be registered with @app.tool"),
        ("uses_llm", "ConfigError", "this app has no model configured"),
    ],
)
async def test_what_is_not_carried_yet_fails_the_run_saying_so(
    temporal: OnTemporal, workflow: str, error: str, says: str
) -> None:
    t = temporal
    rid = await start(t.app, t.client, t.backend, workflow, {})
    with pytest.raises(keel.RunFailed) as caught:
        await result(t.app, t.client, rid)
    assert caught.value.error is not None
    assert caught.value.error.type == error
    assert says in caught.value.error.message


async def test_multi_day_waits_run_in_virtual_time(temporal: OnTemporal) -> None:
    """A two-day sleep and a three-day signal timeout, on Temporal's per-workflow time
    skipping (the dev server started with it on): the run ends as it would in five days."""
    from temporalio.testing import TimeSkipper

    t = temporal
    skipping = TimeSkipper(t.client).client
    rid = await start(t.app, skipping, t.backend, "takes_days", {})
    out = await result(t.app, t.client, rid)
    assert out == "5 days later: no 'approve' signal arrived within 259200s"


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("output", "the output of step 'huge#0' is 3145730 bytes"),
        ("arguments", "the arguments of step 'huge#0' is 3145736 bytes"),
        ("result", "the result of workflow 'too_big' is 3145730 bytes"),
    ],
)
async def test_a_payload_over_keel_s_cap_fails_the_run_saying_so(
    temporal: OnTemporal, where: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never retried forever: refused at once, with what to do instead. (Payloads over
    Temporal's 2 MB limit work: tests/test_temporal_claims.py; the cap, 64 MiB, is
    lowered here so the test moves 3 MB, not 64.)"""
    from keel.backends.temporal import activity

    monkeypatch.setattr(activity, "PAYLOAD_LIMIT", 2 * 1024 * 1024)
    t = temporal
    rid = await start(t.app, t.client, t.backend, "too_big", {"where": where})
    with pytest.raises(keel.RunFailed) as caught:
        await result(t.app, t.client, rid)
    assert caught.value.error is not None
    assert caught.value.error.type == "SerializationError"
    assert says in caught.value.error.message
    assert "over Keel's 2 MiB limit for one payload on Temporal" in caught.value.error.message


async def test_the_state_query_shows_what_a_waiting_run_holds(temporal: OnTemporal) -> None:
    import asyncio

    from keel.backends.temporal import signal
    from keel.backends.temporal.workflow import STATE_QUERY

    t = temporal
    rid = await start(t.app, t.client, t.backend, "shopping", {"item": "tea"})
    handle = t.client.get_workflow_handle(rid)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while (now := await handle.query(STATE_QUERY)).get("waiting_on") != ["add"]:
        assert loop.time() < deadline, now
        await asyncio.sleep(0.05)
    assert now == {
        "state": {"items": ["tea"]},
        "degraded": [],
        "waiting_on": ["add"],
        "wake_at": None,
    }
    await signal(t.client, rid, "add", "cake")
    assert await result(t.app, t.client, rid) == ["tea", "cake"]


def _payloads(message: Any) -> list[Any]:
    """Every Payload inside a protobuf message (history events), however deep."""
    from temporalio.api.common.v1 import Payload

    if isinstance(message, Payload):
        return [message]
    found = []
    for _field, value in message.ListFields():
        items = value if isinstance(value, list) or hasattr(value, "append") else [value]
        for item in items:
            if hasattr(item, "ListFields"):
                found += _payloads(item)
    return found


async def test_an_encrypting_app_encodes_what_it_writes_to_temporal(
    temporal_address: str, store_url: str
) -> None:
    """An App with a codec: Temporal's history holds only encoded payloads, and a
    client without the codec is refused before it writes anything in clear."""
    from keel.backends.temporal import connect, serve, signal
    from keel.backends.temporal.codec import ENCODING
    from keel.codec import AESGCMCodec

    codec = AESGCMCodec([os.urandom(32)])
    app = keel.App(store_url, codec=codec)
    app.tool(charge)
    app.workflow(checkout)
    backend = Backend(address=temporal_address, task_queue=f"enc-{uuid.uuid4().hex[:8]}")
    plain = await connect(backend)
    with pytest.raises(keel.ConfigError, match="in Temporal's history in clear; connect with"):
        async with serve(app, plain, backend):
            pass
    with pytest.raises(keel.ConfigError, match=r"connect\(backend, app=app\)"):
        await start(app, plain, backend, "checkout", {"order": "o"})
    client = await connect(backend, app=app)
    async with serve(app, client, backend, max_cached_workflows=0):
        rid = await start(app, client, backend, "checkout", {"order": "secret-order-42"})
        await signal(client, rid, "shipped", {"note": "secret-note"})
        assert await result(app, client, rid) == "charged secret-order-42 250"
    history = await plain.get_workflow_handle(rid).fetch_history()  # undecoded
    payloads = [p for e in history.events for p in _payloads(e)]
    assert len(payloads) >= 6  # input, activity in and out, signal, result
    for p in payloads:
        assert p.metadata["encoding"] == ENCODING
        assert b"secret" not in p.data
    await app.close()


async def test_the_account_sync_example_runs_unchanged_on_temporal(
    temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/account_sync.py, not a line changed: a keel.Secret by reference in the
    input, revealed only inside the tool, on whichever worker runs it; Temporal's
    history holds the reference, never the key. (The other examples use models and
    approvals: tests/test_temporal_people.py runs approvals on Temporal.)"""
    import hashlib
    import importlib.util

    from keel.backends.temporal import connect, serve

    monkeypatch.chdir(tmp_path)  # the example's App() store would live here (never opened)
    spec = importlib.util.spec_from_file_location(
        "account_sync_on_temporal", ROOT / "examples" / "account_sync.py"
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    key = "crm_live_4f0c8d2e9a7b"
    monkeypatch.setenv("KEEL_EXAMPLE_CRM_KEY", key)
    ref = {"$secret": "env:KEEL_EXAMPLE_CRM_KEY"}
    backend = Backend(address=temporal_address, task_queue=f"ex-{uuid.uuid4().hex[:8]}")
    client = await connect(backend, app=example.app)
    async with serve(example.app, client, backend, max_cached_workflows=0):
        rid = await start(
            example.app, client, backend, "sync", {"account_id": "acct_1001", "crm_key": ref}
        )
        out = await result(example.app, client, rid)
    crm_id = "crm_" + hashlib.sha256(f"{key}:acct_1001".encode()).hexdigest()[:10]
    assert out == {"account": "acct_1001", "crm_id": crm_id, "plan": "pro"}
    history = await client.get_workflow_handle(rid).fetch_history()
    payloads = [p for e in history.events for p in _payloads(e)]
    assert any(b"env:KEEL_EXAMPLE_CRM_KEY" in p.data for p in payloads)  # the reference
    assert not any(key.encode() in p.data for p in payloads)


async def test_a_cancelled_run_ends_cancelled(temporal: OnTemporal) -> None:
    from keel.backends.temporal import cancel

    t = temporal
    rid = await start(t.app, t.client, t.backend, "checkout", {"order": uuid.uuid4().hex})
    await cancel(t.client, rid)
    with pytest.raises(keel.RunCancelled, match=f"run {rid} was cancelled"):
        await result(t.app, t.client, rid)
