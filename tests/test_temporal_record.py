"""Keel's store keeps a Temporal run's record without anyone reading the run: the
worker writes its end (status, result or structured error, typed state), and the
workflow-decided steps (timers, signal waits, ctx.now/uuid/random) are read from
Temporal's history, listed as Keel's engine journals them."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel.backends.temporal import Backend, connect, result, signal, start
from keel.backends.temporal.claims import ENCODING
from keel.store.records import PurgeScope
from keel.types import RunStatus
from tests.limits import WAIT
from tests.temporal_run import on_temporal, stored_end
from tests.test_temporal_backend import _payloads

BIG = 300 * 1024  # over the claim threshold: the result is a claim blob


class Notes(BaseModel):
    seen: list[str] = []


async def fetch(name: str) -> str:
    if name == "broken":
        raise ValueError(f"no record named {name}")
    return f"record {name}"


async def record_it(ctx: keel.Context, name: str, size: int = 0) -> dict[str, Any]:
    found = await ctx.call(fetch, name)
    ctx.state.seen.append(found)
    return {"found": found, "pad": "x" * size}


async def paced(ctx: keel.Context, name: str) -> dict[str, Any]:
    found = await ctx.call(fetch, name)
    await ctx.sleep(0.05)  # a timer
    go = await ctx.wait_for("go", timeout=3600)  # a signal, taken
    try:
        await ctx.wait_for("late", timeout=0.05)  # a signal that never comes
    except keel.SignalTimeout:
        pass
    return {"found": found, "go": go, "at": ctx.now(), "id": ctx.uuid(), "r": ctx.random()}


def _app(store_url: str, **settings: Any) -> keel.App:
    from keel.engine.runtime import Settings

    app = keel.App(store_url, settings=Settings(**settings) if settings else None)
    app.tool(fetch)
    app.workflow(state=Notes, monitors=[keel.drift.Distribution("found")])(record_it)
    app.workflow(paced)
    return app


async def test_the_worker_writes_a_runs_end_nobody_reads(
    temporal_address: str, store_url: str
) -> None:
    app = _app(store_url)
    async with on_temporal(app, temporal_address) as t:
        ok = await start(app, t.client, t.backend, "record_it", {"name": "a", "size": BIG})
        bad = await start(app, t.client, t.backend, "record_it", {"name": "broken"})
        done, failed = await stored_end(app, ok), await stored_end(app, bad)
        keys = await _claim_keys(t.client, t.backend, ok)
        history = await t.client.get_workflow_handle(ok).fetch_history()
    # the end is not a step: no local activity for it in history (ended.end_writer)
    markers = [e.marker_recorded_event_attributes.marker_name for e in history.events]
    assert "core_local_activity" not in markers and "core_patch" in markers, markers
    assert done.status is RunStatus.SUCCEEDED
    assert done.result == {"found": "record a", "pad": "x" * BIG}
    assert done.state == {"seen": ["record a"]}  # the typed state, at the end
    assert failed.status is RunStatus.FAILED and failed.error is not None
    assert (failed.error.type, failed.error.step) == ("ValueError", "fetch#0")
    assert "no record named broken" in failed.error.message
    # its drift monitor observed the run that succeeded (a failed one has no output)
    key = keel.drift.Distribution("found").key
    values = await app.store.drift_values("record_it", key, 10)
    assert [(v.run_id, v.label) for v in values] == [(ok, "record a")]
    # ended in the store: retention takes the run with its claim blobs (the result's)
    purged = await app.store.purge_runs(PurgeScope(ended_before=await app.store.now() + 60))
    assert purged.runs == 2 and purged.blobs >= len(keys) >= 1
    for key in keys:
        with pytest.raises(keel.RunNotFound):
            await app.store.load_blob(key)
    await app.close()


async def _claim_keys(client: Any, backend: Backend, rid: str) -> list[str]:
    """The claim blobs run `rid`'s history refers to (read without the codec)."""
    await client.get_workflow_handle(rid).result()  # the store learns the end first
    raw = await connect(backend)
    history = await raw.get_workflow_handle(rid).fetch_history()
    payloads = [p for e in history.events for p in _payloads(e)]
    return [json.loads(p.data)["key"] for p in payloads if p.metadata["encoding"] == ENCODING]


async def _waits_for(app: keel.App, rid: str, name: str) -> None:
    while name not in (await app.get_run(rid)).waiting_on:  # past the timer, at the wait
        await asyncio.sleep(0.05)


def _shape(steps: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (s.key, s.kind.value, s.name, s.status.value, s.error.type if s.error else None)
        for s in sorted(steps, key=lambda s: (s.scope, s.position))
    ]


async def test_steps_list_what_the_workflow_decided_as_on_keels_engine(
    temporal_address: str, store_url: str
) -> None:
    engine = _app(store_url, poll_interval=0.02)
    handle = await engine.start("paced", {"name": "e"})
    await handle.signal("go", {"by": "ada"}, queue=True)
    await asyncio.wait_for(handle.result(), WAIT)
    on_engine = await engine.steps(handle.id)
    await engine.close()

    app = _app(store_url)
    async with on_temporal(app, temporal_address) as t:
        app.backend = t.backend  # app.steps reads Temporal's history too
        rid = await start(app, t.client, t.backend, "paced", {"name": "t"})
        await asyncio.wait_for(_waits_for(app, rid, "go"), WAIT)
        # a running run: its history so far, the wait it is in PENDING
        pending = ("signal:go#0", "signal", "go", "pending", None)
        assert _shape(await app.steps(rid)) == [*_shape(on_engine)[:2], pending]
        await signal(t.client, rid, "go", {"by": "ada"})
        out = await asyncio.wait_for(result(app, t.client, rid), WAIT)
        steps = await app.steps(rid)
    assert _shape(steps) == _shape(on_engine)
    by_key = {s.key: s for s in steps}
    # the values are the ones the run used: a replay of its history gives them back
    at = datetime.fromisoformat(out["at"]).timestamp()
    values = [by_key[k].output for k in ("now#0", "uuid#0", "random#0")]
    assert values == [pytest.approx(at), out["id"], out["r"]]
    assert by_key["signal:go#0"].output == {"by": "ada"}
    sleep = by_key["sleep#0"]
    assert sleep.wake_at is not None and sleep.ended_at is not None
    assert sleep.ended_at >= sleep.wake_at
    order = ["fetch#0", "sleep#0", "signal:go#0", "signal:late#0"]
    assert [s.key for s in steps[:4]] == order  # in execution order
    await app.close()
