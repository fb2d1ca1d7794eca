"""`RunHandle.result()` and the store: the embedded worker tells a waiter when a run it
executes settles, so the waiter reads the run once then, never while it executes (each
read is a store call; a thousand waiters polling would slow the worker they wait on).
Runs on the test store (`KEEL_TEST_STORE`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import keel
from tests.limits import WAIT


async def test_result_reads_the_run_once_after_it_settles_not_while_it_executes(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    started, go = asyncio.Event(), asyncio.Event()

    @app.tool
    async def hold() -> str:
        started.set()
        await go.wait()
        return "done"

    @app.workflow
    async def held(ctx: keel.Context) -> str:
        out: str = await ctx.call(hold)
        return out

    handle = await app.start(held)
    await asyncio.wait_for(started.wait(), WAIT)
    reads: list[str] = []
    real = app.store.get_run

    async def counted(run_id: str) -> Any:
        reads.append(run_id)
        return await real(run_id)

    monkeypatch.setattr(app.store, "get_run", counted)
    waiter = asyncio.ensure_future(handle.result(timeout=WAIT))
    # Several of the waiter's poll intervals (20 ms doubling) pass while the step holds:
    # the run is executing here, so none of them may read it.
    for _ in range(40):
        await asyncio.sleep(0.005)
    assert reads == []
    go.set()
    assert await waiter == "done"
    assert reads == [handle.id]  # the one read that returns the settled run
    assert app._waiters == {}  # timed-out waits leave no futures behind


async def test_a_timeout_says_what_the_run_is_now_not_what_start_saw(make_app: Any) -> None:
    app = make_app()
    started, go = asyncio.Event(), asyncio.Event()

    @app.tool
    async def hold() -> None:
        started.set()
        await go.wait()

    @app.workflow
    async def held(ctx: keel.Context) -> None:
        await ctx.call(hold)

    handle = await app.start(held)
    await asyncio.wait_for(started.wait(), WAIT)
    with pytest.raises(TimeoutError, match="still RUNNING"):  # start() saw PENDING
        await handle.result(timeout=0)
    go.set()
    await handle.result(timeout=WAIT)
