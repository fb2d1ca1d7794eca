"""The steps a Temporal workflow decides itself (timers, signal waits, ctx.now/uuid)
reach Keel's store with the run's end: the same entries a replay of its history gives,
so an ended run's `app.steps` reads the store and replays nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import keel
from keel.backends.temporal import decided as decided_module
from keel.backends.temporal import result, signal, start
from keel.backends.temporal.decided import decided_steps
from keel.engine.serde import from_json
from keel.types import StepRecord
from tests.limits import WAIT
from tests.temporal_run import on_temporal

BIG = 300 * 1024  # a signal payload over the claim threshold: its entry goes out of line
DECIDED = ["now#0", "signal:go#0", "signal:late#0", "sleep#0", "uuid#0"]


async def paced(ctx: keel.Context, name: str) -> dict[str, Any]:
    await ctx.sleep(0.01)  # a timer
    go = await ctx.wait_for("go", timeout=3600)  # a signal, taken
    try:
        await ctx.wait_for("late", timeout=0.01)  # a signal that never comes
    except keel.SignalTimeout:
        pass
    return {"at": ctx.now(), "id": ctx.uuid(), "pad": len(go["pad"]), "name": name}


async def _waits_for(app: keel.App, rid: str, name: str) -> None:
    while name not in (await app.get_run(rid)).waiting_on:
        await asyncio.sleep(0.02)


async def _output(app: keel.App, rec: StepRecord) -> Any:
    return from_json(await app.store.load_blob(rec.blob)) if rec.blob else rec.output


def _fields(rec: StepRecord) -> tuple[Any, ...]:
    err = None if rec.error is None else (rec.error.type, rec.error.message, rec.error.step)
    times = (rec.started_at, rec.ended_at, rec.wake_at)
    return (rec.kind, rec.name, rec.scope, rec.position, rec.status, rec.digest, times, err)


async def test_an_ended_runs_decided_steps_are_in_keels_store(
    temporal_address: str, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = keel.App(store_url)
    app.workflow(paced)
    async with on_temporal(app, temporal_address) as t:
        app.backend = t.backend
        rid = await start(app, t.client, t.backend, "paced", {"name": "t"})
        await asyncio.wait_for(_waits_for(app, rid, "go"), WAIT)
        # running: the worker has written none of them; app.steps replays the history
        assert [s.key for s in await app.store.load_steps(rid)] == []
        running = {s.key: s.status.value for s in await app.steps(rid)}
        assert running == {"sleep#0": "ok", "signal:go#0": "pending"}
        await signal(t.client, rid, "go", {"by": "ada", "pad": "x" * BIG})
        out = await asyncio.wait_for(result(app, t.client, rid), WAIT)
        replayed = await decided_steps(app, t.client, rid, "paced", t.backend.task_queue)
        stored = {s.key: s for s in await app.store.load_steps(rid)}
        assert sorted(s.key for s in replayed) == sorted(stored) == DECIDED
        for rec in replayed:  # the store has what the history's replay gives
            assert _fields(stored[rec.key]) == _fields(rec), rec.key
            assert await _output(app, stored[rec.key]) == rec.output, rec.key
        assert stored["signal:go#0"].blob is not None  # the large payload, out of line
        assert stored["uuid#0"].output == out["id"]
        assert stored["signal:late#0"].error is not None
        assert stored["signal:late#0"].error.type == "SignalTimeout"

        # ended: app.steps reads the store, no replay
        async def no_replay(*args: Any) -> list[StepRecord]:
            raise AssertionError("an ended run's steps were replayed")

        monkeypatch.setattr(decided_module, "decided_steps", no_replay)
        assert sorted(s.key for s in await app.steps(rid)) == DECIDED
    await app.close()
