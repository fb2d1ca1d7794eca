"""Keel's store keeps a Temporal run's record without anyone reading the run: the
worker writes its end (status, result or structured error, typed state), and the
workflow-decided steps (timers, signal waits, ctx.now/uuid/random) are read from
Temporal's history, listed as Keel's engine journals them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel.backends.temporal import Backend, connect, start
from keel.backends.temporal.claims import ENCODING
from keel.store.records import PurgeScope
from keel.types import RunInfo, RunStatus
from tests.limits import WAIT
from tests.temporal_run import on_temporal
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


def _app(store_url: str) -> keel.App:
    app = keel.App(store_url)
    app.tool(fetch)
    app.workflow(state=Notes)(record_it)
    return app


async def _ended(app: keel.App, rid: str) -> RunInfo:
    """The run as Keel's store has it once ended: the store only, never Temporal."""

    async def poll() -> RunInfo:
        while True:
            info = await app.store.get_run(rid)
            if info is not None and info.status.terminal:
                return info
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), WAIT)


async def test_the_worker_writes_a_runs_end_nobody_reads(
    temporal_address: str, store_url: str
) -> None:
    app = _app(store_url)
    async with on_temporal(app, temporal_address) as t:
        ok = await start(app, t.client, t.backend, "record_it", {"name": "a", "size": BIG})
        bad = await start(app, t.client, t.backend, "record_it", {"name": "broken"})
        done, failed = await _ended(app, ok), await _ended(app, bad)
        keys = await _claim_keys(t.backend, ok)
    assert done.status is RunStatus.SUCCEEDED
    assert done.result == {"found": "record a", "pad": "x" * BIG}
    assert done.state == {"seen": ["record a"]}  # the typed state, at the end
    assert failed.status is RunStatus.FAILED and failed.error is not None
    assert (failed.error.type, failed.error.step) == ("ValueError", "fetch#0")
    assert "no record named broken" in failed.error.message
    # ended in the store: retention takes the run with its claim blobs (the result's)
    purged = await app.store.purge_runs(PurgeScope(ended_before=await app.store.now() + 60))
    assert purged.runs == 2 and purged.blobs >= len(keys) >= 1
    for key in keys:
        with pytest.raises(keel.RunNotFound):
            await app.store.load_blob(key)
    await app.close()


async def _claim_keys(backend: Backend, rid: str) -> list[str]:
    """The claim blobs run `rid`'s history refers to (read without the codec)."""
    raw = await connect(backend)
    history = await raw.get_workflow_handle(rid).fetch_history()
    payloads = [p for e in history.events for p in _payloads(e)]
    return [json.loads(p.data)["key"] for p in payloads if p.metadata["encoding"] == ENCODING]
