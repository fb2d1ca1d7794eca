"""A cancelled Temporal run's end is written by the worker as the run ends: CANCELLED,
with its typed state as far as it got, its spans exported, without anyone calling
`result()` or reading the run; a history of a run cancelled before that replays.

tests/temporal_histories/cancelled.json is a real history of `nap` (below), cancelled
at its wait, recorded on the dev server by the code before the worker wrote a cancelled
end; `KEEL_RECORD_HISTORIES=1` records it again with the current code (commit it only
for a reason: it pins that the old history still replays).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel.backends.temporal import Backend, cancel, connect, serve, start
from keel.types import RunInfo, RunStatus
from tests.limits import WAIT
from tests.temporal_run import on_temporal

HISTORY = Path(__file__).parent / "temporal_histories" / "cancelled.json"
QUEUE = "keel-replay-cancel"  # the task queue recorded in the history


class Progress(BaseModel):
    done: list[str] = []


async def note(what: str) -> str:
    return f"noted {what}"


async def nap(ctx: keel.Context, what: str) -> str:
    ctx.state.done.append(await ctx.call(note, what))
    await ctx.wait_for("go", timeout=3600)  # cancelled here
    ctx.state.done.append("after go")
    return "woke"


def _app(store_url: str) -> keel.App:
    app = keel.App(store_url)
    app.tool(note)
    app.workflow(state=Progress)(nap)
    return app


async def _stored_end(app: keel.App, rid: str) -> RunInfo:
    """The run once Keel's store has its end: the store only, never Temporal."""

    async def poll() -> RunInfo:
        while True:
            info = await app.store.get_run(rid)
            if info is not None and info.status.terminal:
                return info
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), WAIT)


async def _waits(app: keel.App, client: Any, rid: str) -> None:
    """Until run `rid` waits for its signal (its note step is in the store)."""
    from keel.backends.temporal.workflow import STATE_QUERY

    async def poll() -> None:
        handle = client.get_workflow_handle(rid)
        while "go" not in (await handle.query(STATE_QUERY)).get("waiting_on", []):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), WAIT)


async def _record(store_url: str, address: str) -> None:
    app = _app(store_url)
    backend = Backend(address=address, task_queue=QUEUE)
    client = await connect(backend, app=app)
    async with serve(app, client, backend, max_cached_workflows=0):
        rid = await start(app, client, backend, "nap", {"what": "tea"})
        await _waits(app, client, rid)
        await cancel(client, rid)
        await _cancelled_on_temporal(client, rid)
    history = await client.get_workflow_handle(rid).fetch_history()
    HISTORY.write_text(history.to_json())
    await app.close()


async def _cancelled_on_temporal(client: Any, rid: str) -> None:
    """Temporal ended run `rid` as cancelled (not failed)."""
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import is_cancelled_exception

    with pytest.raises(WorkflowFailureError) as caught:
        await asyncio.wait_for(client.get_workflow_handle(rid).result(), WAIT)
    assert is_cancelled_exception(caught.value.cause), caught.value.cause


@pytest.fixture
async def recorded(store_url: str, request: pytest.FixtureRequest) -> None:
    if os.environ.get("KEEL_RECORD_HISTORIES") or not HISTORY.exists():
        await _record(store_url, request.getfixturevalue("temporal_address"))


async def test_a_run_cancelled_before_the_worker_wrote_its_end_replays(
    recorded: None, store_url: str
) -> None:
    from temporalio.client import WorkflowHistory

    from keel.backends.temporal import replayer

    app = _app(store_url)
    history = WorkflowHistory.from_json("cancelled-run", HISTORY.read_text())
    await replayer(app).replay_workflow(history)
    await app.close()
