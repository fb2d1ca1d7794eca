"""Replay that silently drops recorded steps is non-determinism too.

A run killed mid-way and resumed on code that makes fewer steps (or maps fewer or
more items) must fail with `NonDeterminismError` naming the first step it dropped,
never finish SUCCEEDED with effects that the new code does not know about.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import keel
from keel.types import RunStatus
from tests.limits import WAIT

APP = "tests.apps.divergence_app"
RESULT_TIMEOUT = WAIT  # a bound, never a timing (tests/limits.py)


async def _kill_mid_run(h: Any, workflow: str, block_at: int, **env: Any) -> Any:
    """Start `workflow` in a worker, let it journal `block_at` steps, SIGKILL it."""
    app = h.app(APP)
    proc = h.spawn(APP, KEEL_TEST_BLOCK_AT=block_at, **env)
    await h.wait_ready(proc)
    handle = await app.start(workflow, id=f"{workflow}-run", execute=False)
    blocked = h.data / f"blocked-{block_at}"
    await h.wait_until(
        blocked.exists, timeout=RESULT_TIMEOUT, what=f"step {block_at} to block", procs=[proc]
    )
    await h.kill(proc, app, handle.id)
    return app, handle


async def test_fewer_steps_after_a_kill_fail_naming_the_first_dropped_step(
    worker_harness: Any,
) -> None:
    h = worker_harness
    app, handle = await _kill_mid_run(h, "steps", 6, KEEL_TEST_STEPS=10)
    before = h.execution_counts()
    assert sorted(before) == sorted(f"{handle.id}:work#{i}" for i in range(7))

    h.spawn(APP, KEEL_TEST_STEPS=3)  # the new code makes 3 steps
    info = await h.wait_status(app, handle.id, "FAILED", timeout=RESULT_TIMEOUT)
    err = info.error
    assert err is not None and err.type == "NonDeterminismError", err
    assert err.step == "work#3" and err.data["recorded"] == "work#3"
    assert "work#3" in err.message and "(and 2 more)" in err.message
    assert err.data["unreached"][:3] == ["work#3", "work#4", "work#5"]
    assert info.result is None
    # nothing ran again: the 3 kept steps replayed, the dropped ones stay as they were
    assert h.execution_counts() == before
    assert h.effect_dupes() == []


@pytest.mark.parametrize("items", [3, 12])
async def test_a_map_with_fewer_or_more_items_fails_at_the_map(
    worker_harness: Any, items: int
) -> None:
    h = worker_harness
    app, handle = await _kill_mid_run(h, "fan", 6, KEEL_TEST_ITEMS=10)
    before = h.execution_counts()
    assert len(before) == 7  # items 0-5 journaled, item 6 in flight at the kill
    started = {s.key: s for s in await app.steps(handle.id)}["map:work#0"]
    assert started.status.value == "pending" and started.input == {"items": 10}

    h.spawn(APP, KEEL_TEST_ITEMS=items)
    info = await h.wait_status(app, handle.id, "FAILED", timeout=RESULT_TIMEOUT)
    err = info.error
    assert err is not None and err.type == "NonDeterminismError", err
    assert err.step == "map:work#0"  # caught at the map, before any item ran
    assert err.data["recorded_input"] == '{"items": 10}'
    assert err.data["new_input"] == f'{{"items": {items}}}'
    assert "recorded: {\"items\": 10}" in err.message
    assert h.execution_counts() == before


# -- in-process: the first version waits on a signal, the second replays ------------------


async def _until_waiting(app: keel.App, wf: Any, run_id: str) -> None:
    info = await (await app.start(wf, id=run_id)).settle(RESULT_TIMEOUT)
    assert info.status is RunStatus.WAITING, info
    await app.close()


async def _resume(app: keel.App, wf: Any, run_id: str) -> keel.RunInfo:
    await app.signal(run_id, "go")
    return await (await app.start(wf, id=run_id)).settle(RESULT_TIMEOUT)


async def test_a_failure_that_skips_recorded_steps_is_reported_as_the_divergence(
    make_app: Callable[..., keel.App],
) -> None:
    app1 = make_app()

    @app1.tool
    async def work(i: int) -> int:
        return i

    @app1.workflow(name="wf")
    async def v1(ctx: keel.Context) -> int:
        for i in range(5):
            await ctx.call(work, i)
        await ctx.wait_for("go")
        return 0

    await _until_waiting(app1, v1, "r1")
    app2 = make_app()
    work2 = app2.tool(work.__wrapped__, name="work")

    @app2.workflow(name="wf")
    async def v2(ctx: keel.Context) -> int:
        await ctx.call(work2, 0)
        raise RuntimeError("the new code gives up early")

    info = await _resume(app2, v2, "r1")
    assert info.status is RunStatus.FAILED
    assert info.error is not None and info.error.type == "NonDeterminismError"
    assert info.error.step == "work#1"


async def test_a_step_removed_from_a_phase_or_a_gather_branch_is_caught(
    make_app: Callable[..., keel.App],
) -> None:
    app1 = make_app()

    @app1.tool
    async def work(i: int) -> int:
        return i

    async def branch(ctx: keel.Context, n: int) -> int:
        for i in range(n):
            await ctx.call(work, i)
        await ctx.wait_for("go")
        return n

    @app1.workflow(name="wf")
    async def v1(ctx: keel.Context) -> int:
        async with ctx.phase("p"):
            await ctx.call(work, 1)
            await ctx.call(work, 2)
        res = await ctx.gather(branch(ctx, 2), branch(ctx, 1))
        return sum(v for v in res.values if v)

    for run_id in ("r2", "r3"):
        info = await (await app1.start(v1, id=run_id)).settle(RESULT_TIMEOUT)
        assert info.status is RunStatus.WAITING, info
    await app1.close()
    # the new code (a tool passed to ctx.call carries its definition, whichever App runs)
    app2 = make_app()

    @app2.workflow(name="wf")
    async def v2(ctx: keel.Context) -> int:
        async with ctx.phase("p"):
            await ctx.call(work, 1)  # work#1 inside the phase is gone
        return 0

    info = await _resume(app2, v2, "r2")
    assert info.error is not None and info.error.type == "NonDeterminismError", info
    assert info.error.step == "phase:p#0/0/work#1"

    app3 = make_app()

    @app3.workflow(name="wf")
    async def v3(ctx: keel.Context) -> int:
        async with ctx.phase("p"):
            await ctx.call(work, 1)
            await ctx.call(work, 2)
        res = await ctx.gather(branch(ctx, 2))  # one branch fewer
        return sum(v for v in res.values if v)

    info = await _resume(app3, v3, "r3")
    assert info.error is not None and info.error.type == "NonDeterminismError", info
    assert info.error.step == "gather#0"
    assert info.error.data["recorded_input"] == '{"branches": 2}'


async def test_changed_arguments_show_both_redacted(make_app: Callable[..., keel.App]) -> None:
    app1 = make_app()

    @app1.tool
    async def charge(account: str, amount: int, api_key: str) -> int:
        return amount

    @app1.workflow(name="wf")
    async def v1(ctx: keel.Context) -> int:
        await ctx.call(charge, "acct-1", 100, "sk-live-0123456789abcdefXYZ")
        await ctx.wait_for("go")
        return 0

    await _until_waiting(app1, v1, "r4")
    app2 = make_app()
    charge2 = app2.tool(charge.__wrapped__, name="charge")

    @app2.workflow(name="wf")
    async def v2(ctx: keel.Context) -> int:
        await ctx.call(charge2, "acct-1", amount=250, api_key="sk-live-0123456789abcdefXYZ")
        await ctx.wait_for("go")
        return 0

    info = await _resume(app2, v2, "r4")
    err = info.error
    assert err is not None and err.type == "NonDeterminismError"
    assert '"amount": 100' in err.data["recorded_input"]
    assert '"amount": 250' in err.data["new_input"]
    assert '"amount": 100' in err.message and '"amount": 250' in err.message
    assert "sk-live" not in err.message and "[REDACTED]" in err.data["new_input"]
