"""Determinism on Temporal: committed histories replayed with `temporalio.worker.Replayer`.

tests/temporal_histories/order.json is a real history of `order` (below), recorded on the
dev server; `KEEL_RECORD_HISTORIES=1` records it again (commit the result). Replaying it
with the same code passes; with changed code it fails with Keel's NonDeterminismError
text, naming both steps; a live worker fails the run's workflow task with that text.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

import keel
from tests.temporal_run import on_temporal

HISTORY = Path(__file__).parent / "temporal_histories" / "order.json"
QUEUE = "keel-replay"  # the task queue recorded in the history


async def price(item: str, qty: int) -> float:
    return {"tea": 2.5, "cake": 4.0}[item] * qty


async def receipt(total: float) -> str:
    return f"total {total:.2f}"


async def order(ctx: keel.Context, item: str, qty: int) -> str:
    cost = await ctx.call(price, item, qty)
    await ctx.sleep(0.01)
    paid = await ctx.wait_for("paid", timeout=600)
    return str(await ctx.call(receipt, cost)) + f" paid by {paid}"


async def order_reordered(ctx: keel.Context, item: str, qty: int) -> str:
    await ctx.call(receipt, 0.0)  # a new first step: replay reaches it where price ran
    cost = await ctx.call(price, item, qty)
    await ctx.sleep(0.01)
    paid = await ctx.wait_for("paid", timeout=600)
    return str(await ctx.call(receipt, cost)) + f" paid by {paid}"


async def order_other_args(ctx: keel.Context, item: str, qty: int) -> str:
    cost = await ctx.call(price, item, qty + 1)  # same step, other arguments
    await ctx.sleep(0.01)
    paid = await ctx.wait_for("paid", timeout=600)
    return str(await ctx.call(receipt, cost)) + f" paid by {paid}"


async def order_patched(ctx: keel.Context, item: str, qty: int) -> str:
    from temporalio import workflow

    cost = await ctx.call(price, item, qty)
    if workflow.patched("fraud-check"):  # docs/temporal.md: versioning a deployed workflow
        await ctx.call(receipt, -1.0)
    await ctx.sleep(0.01)
    paid = await ctx.wait_for("paid", timeout=600)
    return str(await ctx.call(receipt, cost)) + f" paid by {paid}"


async def order_without_receipt(ctx: keel.Context, item: str, qty: int) -> str:
    cost = await ctx.call(price, item, qty)
    await ctx.sleep(0.01)
    paid = await ctx.wait_for("paid", timeout=600)
    return f"{cost} paid by {paid}"  # the last step is gone


def _app(store_url: str, workflow: Any) -> keel.App:
    app = keel.App(store_url)
    app.tool(price)
    app.tool(receipt)
    app.workflow(name="order")(workflow)
    return app


async def _record(store_url: str, address: str) -> None:
    from keel.backends.temporal import Backend, connect, result, serve, signal, start

    app = _app(store_url, order)
    backend = Backend(address=address, task_queue=QUEUE)
    client = await connect(backend, app=app)
    async with serve(app, client, backend, max_cached_workflows=0):
        rid = await start(app, client, backend, "order", {"item": "tea", "qty": 2})
        await signal(client, rid, "paid", "ada")
        assert await result(app, client, rid) == "total 5.00 paid by ada"
    history = await client.get_workflow_handle(rid).fetch_history()
    HISTORY.write_text(history.to_json())


async def _replay(store_url: str, workflow: Any) -> None:
    from temporalio.client import WorkflowHistory

    from keel.backends.temporal import replayer

    history = WorkflowHistory.from_json("order-run", HISTORY.read_text())
    await replayer(_app(store_url, workflow)).replay_workflow(history)


@pytest.fixture
async def recorded(store_url: str, request: pytest.FixtureRequest) -> None:
    if os.environ.get("KEEL_RECORD_HISTORIES") or not HISTORY.exists():
        await _record(store_url, request.getfixturevalue("temporal_address"))


async def test_the_recorded_history_replays_with_the_same_code(
    recorded: None, store_url: str
) -> None:
    await _replay(store_url, order)


async def test_a_history_that_wrote_its_end_with_the_local_activity_replays(
    store_url: str,
) -> None:
    """order_end_activity.json was recorded by the code that wrote a run's end with the
    `keel.end` local activity (before `keel.end.direct`): it replays with today's code,
    which hands a new run's end to the worker's loop instead."""
    from temporalio.client import WorkflowHistory

    from keel.backends.temporal import replayer

    text = (HISTORY.parent / "order_end_activity.json").read_text()
    history = WorkflowHistory.from_json("order-end-activity", text)
    await replayer(_app(store_url, order)).replay_workflow(history)


async def test_a_new_step_fails_replay_with_keels_error_naming_both(
    recorded: None, store_url: str
) -> None:
    with pytest.raises(Exception, match="NonDeterminismError") as caught:
        await _replay(store_url, order_reordered)
    text = str(caught.value)
    assert "replay reached step 'receipt#0' where the journal recorded 'price#0'" in text
    assert "The workflow code changed or is not deterministic" in text


async def test_other_arguments_fail_replay_with_keels_digest_error(
    recorded: None, store_url: str
) -> None:
    with pytest.raises(Exception, match="NonDeterminismError") as caught:
        await _replay(store_url, order_other_args)
    text = str(caught.value)
    assert "step 'price#0' was recorded with input digest" in text
    assert "replay called it with different arguments" in text


async def test_a_step_removed_at_the_end_fails_replay_on_temporal_s_own_check(
    recorded: None, store_url: str
) -> None:
    with pytest.raises(Exception, match=r"[Nn]ondeterminism"):
        await _replay(store_url, order_without_receipt)


async def test_a_patched_change_replays_old_histories_and_runs_new_code(
    recorded: None, store_url: str, temporal_address: str
) -> None:
    await _replay(store_url, order_patched)  # the old run never reaches the new step
    app = _app(store_url, order_patched)
    async with on_temporal(app, temporal_address) as t:
        rid = await t.run("order", {"item": "cake", "qty": 2}, [("paid", "eve")])
    assert rid == ("ok", "total 8.00 paid by eve")


async def test_a_live_worker_fails_the_diverged_task_naming_both_steps(
    temporal_address: str, store_url: str
) -> None:
    """A run started on old code and resumed by a worker with new code: its workflow
    task fails with Keel's text (shown in Temporal's history and UI) and the run waits
    for fixed code, as Temporal does; it does not run the new code's steps."""
    from temporalio.api.enums.v1 import EventType

    from keel.backends.temporal import serve, signal, start

    old, new = _app(store_url, order), _app(store_url, order_reordered)
    rid = f"order-{uuid.uuid4().hex[:8]}"
    async with on_temporal(old, temporal_address) as t:
        await start(old, t.client, t.backend, "order", {"item": "cake", "qty": 1}, run_id=rid)
        await _until(t.client, rid, EventType.EVENT_TYPE_TIMER_FIRED)
    async with serve(new, t.client, t.backend, max_cached_workflows=0):
        await signal(t.client, rid, "paid", "bob")
        failed = await _until(t.client, rid, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
    message = failed.workflow_task_failed_event_attributes.failure.message
    assert "replay reached step 'receipt#0' where the journal recorded 'price#0'" in message
    handle = t.client.get_workflow_handle(rid)
    assert (await handle.describe()).status.name == "RUNNING"  # not failed, not finished
    await handle.terminate("test over")


async def _until(client: Any, run_id: str, event_type: Any) -> Any:
    """Until the run's history holds an event of `event_type`; that event."""
    import asyncio

    from tests.limits import WAIT

    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while loop.time() < deadline:
        history = await client.get_workflow_handle(run_id).fetch_history()
        for event in history.events:
            if event.event_type == event_type:
                return event
        await asyncio.sleep(0.05)
    pytest.fail(f"run {run_id} never got a {event_type} event")
