"""A cancelled Temporal run's end is written by the worker as the run ends: CANCELLED,
with its typed state as far as it got, its spans exported, without anyone calling
`result()` or reading the run (cancelled at a wait, or inside a step); histories of
runs cancelled before the worker wrote such an end still replay.

tests/temporal_histories/cancelled_*.json are real histories of `nap`, `busy` and
`fans` (below), cancelled at the wait, inside a step and inside a map's item, recorded
on the dev server by the code from before the worker wrote a cancelled end (`busy` then
FAILED; `fans` went on to its next item, then FAILED);
`KEEL_RECORD_HISTORIES=1` records them again, with the current code: do that only to
pin newer histories.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel.backends.temporal import Backend, cancel, connect, serve, start
from keel.observe import ids
from keel.types import RunStatus
from tests.limits import WAIT
from tests.temporal_run import on_temporal, stored_end

HISTORIES = Path(__file__).parent / "temporal_histories"
QUEUE = "keel-replay-cancel"  # the task queue recorded in the histories
WORKFLOWS = ("nap", "busy", "fans")  # each cancelled where it is at rest (`_at_rest`)


class Progress(BaseModel):
    done: list[str] = []


_gate: dict[str, asyncio.Event] = {}  # `stall` runs until the test opens "open"
_stalled: list[str] = []  # what `stall` was called with, in order


async def note(what: str) -> str:
    return f"noted {what}"


async def stall(what: str) -> str:
    _stalled.append(what)
    await _gate["open"].wait()
    return f"stalled {what}"


async def nap(ctx: keel.Context, what: str) -> str:
    ctx.state.done.append(await ctx.call(note, what))
    await ctx.wait_for("go", timeout=3600)  # cancelled here
    ctx.state.done.append("went")
    return "woke"


async def busy(ctx: keel.Context, what: str) -> str:
    ctx.state.done.append(await ctx.call(note, what))
    ctx.state.done.append(await ctx.call(stall, what))  # cancelled in here
    return "done"


async def fans(ctx: keel.Context, what: str) -> str:
    async def item(c: keel.Context, name: str) -> str:
        return str(await c.call(stall, name))

    ctx.state.done.append(await ctx.call(note, what))
    await ctx.map(item, [f"{what} 1", f"{what} 2"], concurrency=1)  # cancelled in item 1
    return "done"


async def asks(ctx: keel.Context, amount: int) -> str:
    ctx.state.done.append(await ctx.call(note, f"refund {amount}"))
    await ctx.approval({"refund": amount}, reason="large refund")  # cancelled here
    return "refunded"


def _app(store_url: str, **settings: Any) -> keel.App:
    from keel.engine.runtime import Settings

    app = keel.App(store_url, settings=Settings(**settings) if settings else None)
    app.tool(note)
    app.tool(stall)
    for wf in (nap, busy, fans, asks):
        app.workflow(state=Progress)(wf)
    return app


@pytest.fixture
def gate() -> Iterator[dict[str, asyncio.Event]]:
    _gate.update(open=asyncio.Event())
    _stalled.clear()
    yield _gate
    _gate["open"].set()  # a stalled activity ends: the worker's shutdown need not wait


async def _at_rest(client: Any, rid: str, what: str) -> None:
    """Until run `rid` (`nap`: at its wait; else in `stall`) is where it is cancelled."""
    from keel.backends.temporal.workflow import STATE_QUERY

    handle = client.get_workflow_handle(rid)

    async def there() -> bool:
        if (await handle.describe()).workflow_type != "nap":
            return any(s.startswith(what) for s in _stalled)
        return "go" in (await handle.query(STATE_QUERY)).get("waiting_on", [])

    async def poll() -> None:
        while not await there():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), WAIT)


async def _cancelled_on_temporal(client: Any, rid: str) -> None:
    """Temporal ended run `rid` as cancelled (not failed)."""
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import is_cancelled_exception

    with pytest.raises(WorkflowFailureError) as caught:
        await asyncio.wait_for(client.get_workflow_handle(rid).result(), WAIT)
    assert is_cancelled_exception(caught.value.cause), caught.value.cause


# -- the worker writes the end ------------------------------------------------------------


async def test_the_worker_writes_a_cancelled_runs_end_nobody_reads(
    temporal_address: str, store_url: str, otlp_http: Any, gate: dict[str, asyncio.Event]
) -> None:
    from temporalio.worker import Replayer

    from keel.backends.temporal import replayer

    app = _app(store_url)  # after the OTLP environment is set
    whats = {"nap": "tea", "busy": "cake", "fans": "bun"}  # at a wait, in a step, a map
    async with on_temporal(app, temporal_address) as t:
        rids = {}
        for workflow, what in whats.items():
            rids[workflow] = await start(app, t.client, t.backend, workflow, {"what": what})
            await _at_rest(t.client, rids[workflow], what)
            await cancel(t.client, rids[workflow])  # temporalio's own: Keel reads nothing
        ended = {w: await stored_end(app, rid) for w, rid in rids.items()}
        for rid in rids.values():
            await _cancelled_on_temporal(t.client, rid)
        # Keel's spans of each run were exported once its end was recorded
        traces = {ids.trace_id(rid).to_bytes(16, "big").hex() for rid in rids.values()}
        await asyncio.to_thread(
            otlp_http.wait_for, lambda spans: traces <= {s.trace_id for s in spans}
        )
        # the histories with the cancelled end replay
        histories = [await t.client.get_workflow_handle(r).fetch_history() for r in rids.values()]
    for workflow, what in whats.items():
        info = ended[workflow]
        assert info.status is RunStatus.CANCELLED, info
        assert info.ended_at is not None and info.error is None and info.result is None
        assert info.state == {"done": [f"noted {what}"]}  # its typed state, as far as it got
    assert _stalled == ["cake", "bun 1"]  # the map's next item never started
    replaying: Replayer = replayer(app)
    for history in histories:
        await replaying.replay_workflow(history)
    # reading the run, or waiting for it, finds the end written and changes nothing
    app.backend = t.backend
    assert (await app.get_run(rids["nap"])) == ended["nap"]
    with pytest.raises(keel.RunCancelled):
        await app.handle(rids["busy"]).result(timeout=WAIT)
    await app.close()


async def test_app_cancel_ends_the_run_in_the_store_and_leaves_its_approval_as_the_engine(
    temporal_address: str, store_url: str
) -> None:
    """`app.cancel` (what `keel cancel` calls) on a run waiting for an approval: the run
    is CANCELLED in the store with its end time when the call returns; its request stays
    in the store as Keel's engine leaves it (pending: it names a run that has ended)."""
    engine = _app(store_url, poll_interval=0.02)
    handle = await engine.start("asks", {"amount": 70})
    assert (await handle.settle(timeout=WAIT)).status is RunStatus.WAITING
    assert (await engine.cancel(handle.id)).status is RunStatus.CANCELLED
    [on_engine] = [r for r in await engine.approvals.list(status=None) if r.run_id == handle.id]
    late_on_engine = await _late_decision(engine, on_engine.id)
    await engine.close()

    app = _app(store_url)
    async with on_temporal(app, temporal_address) as t:
        app.backend = t.backend
        rid = await start(app, t.client, t.backend, "asks", {"amount": 80})

        async def asked() -> Any:
            while not (found := [r for r in await app.approvals.list() if r.run_id == rid]):
                await asyncio.sleep(0.05)
            return found[0]

        request = await asyncio.wait_for(asked(), WAIT)
        returned = await app.cancel(rid)
        stored = await app.store.get_run(rid)
        after = await app.approvals.get(request.id)
        late = await _late_decision(app, request.id)
    assert returned.status is RunStatus.CANCELLED
    assert stored is not None and stored.status is RunStatus.CANCELLED
    assert stored.ended_at is not None and stored.state == {"done": ["noted refund 80"]}
    assert after is not None and after.status == on_engine.status == "pending"
    assert late == late_on_engine == ("approved", RunStatus.CANCELLED)
    await app.close()


async def _late_decision(app: keel.App, request_id: str) -> tuple[str, RunStatus]:
    """A person approves the request of a run that was cancelled: the decision is
    recorded, the run stays as it ended."""
    decided = await app.approvals.approve(request_id, by="ada")
    run = await app.store.get_run(decided.run_id)
    assert run is not None
    return decided.status, run.status


# -- histories of runs cancelled before ---------------------------------------------------


async def _record(store_url: str, address: str, gate: dict[str, asyncio.Event]) -> None:
    app = _app(store_url)
    backend = Backend(address=address, task_queue=QUEUE)
    client = await connect(backend, app=app)
    async with serve(app, client, backend, max_cached_workflows=0):
        for workflow in WORKFLOWS:
            rid = await start(app, client, backend, workflow, {"what": workflow})
            await _at_rest(client, rid, workflow)
            await cancel(client, rid)
            if workflow == "fans":
                gate["open"].set()  # the code before went on to the map's next item
            with pytest.raises(Exception):  # noqa: B017 (cancelled, or failed before)
                await asyncio.wait_for(client.get_workflow_handle(rid).result(), WAIT)
            history = await client.get_workflow_handle(rid).fetch_history()
            (HISTORIES / f"cancelled_{workflow}.json").write_text(history.to_json())
    await app.close()


@pytest.fixture
async def recorded(
    store_url: str, request: pytest.FixtureRequest, gate: dict[str, asyncio.Event]
) -> None:
    missing = not all((HISTORIES / f"cancelled_{w}.json").exists() for w in WORKFLOWS)
    if os.environ.get("KEEL_RECORD_HISTORIES") or missing:
        await _record(store_url, request.getfixturevalue("temporal_address"), gate)


@pytest.mark.parametrize("workflow", WORKFLOWS)
async def test_a_run_cancelled_before_the_worker_wrote_its_end_replays(
    recorded: None, store_url: str, workflow: str
) -> None:
    from temporalio.client import WorkflowHistory

    from keel.backends.temporal import replayer

    app = _app(store_url)
    text = (HISTORIES / f"cancelled_{workflow}.json").read_text()
    await replayer(app).replay_workflow(WorkflowHistory.from_json(f"cancelled-{workflow}", text))
    await app.close()
