"""State patches across a resume: a resumed execution computes its deltas from the same
base the first one had, so replay restores the exact state and the journal's deltas
chain (a map, a gather or a phase whose record replay does not re-apply, and a phase
attempt that replay skips, used to leave the base stale: an append was lost on replay,
or recorded twice)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field

import keel
from keel.observe.journal_view import journal_view
from keel.types import RunStatus
from tests.limits import WAIT

SETTLE = WAIT  # a bound, never a timing (tests/limits.py)


class Log(BaseModel):
    log: list[str] = Field(default_factory=list)
    ok: bool = False


START = Log().model_dump(mode="json")


async def fold(app: keel.App, run_id: str) -> dict[str, dict[str, object]]:
    run = await app.get_run(run_id)
    view = journal_view(run, await app.steps(run_id), dict(START), set(Log.model_fields))
    return {n.key: n.state or {} for n in view.nodes()}


async def test_a_skipped_phase_attempt_keeps_what_came_before_the_phase(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def step(n: int) -> int:
        return n

    def passed(state: Log) -> list[str]:
        return [] if state.ok else ["not yet"]

    @app.workflow(state=Log)
    async def wf(ctx: keel.Context) -> list[str]:
        ctx.state.log.append("a")
        await ctx.call(step, 0)
        ctx.state.log.append("x")  # recorded with attempt 0's first step
        async for attempt in ctx.phase("p", check=passed, retries=1):
            async with attempt:
                ctx.state.log.append(f"try {attempt.number}")
                await ctx.call(step, attempt.number)  # attempt 1: an append to [a, x]
                ctx.state.ok = attempt.number >= 1
        await ctx.wait_for("go")  # the resume replays attempt 1, skipping attempt 0
        ctx.state.log.append("end")
        await ctx.call(step, 9)
        return list(ctx.state.log)

    handle = await app.start(wf)
    info = await handle.settle(SETTLE)
    assert info.status is RunStatus.WAITING and info.state is not None
    assert info.state["log"] == ["a", "x", "try 1"]
    await handle.signal("go", 1)
    assert await handle.result(SETTLE) == ["a", "x", "try 1", "end"]
    states = await fold(app, handle.id)
    assert states["phase:p#0/1/step#0"]["log"] == ["a", "x", "try 1"]
    assert states["step#1"] == (await app.get_run(handle.id)).state


async def test_a_replayed_map_and_gather_leave_the_next_delta_exact(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def step(n: int) -> int:
        return n

    async def item(ctx: keel.Context, n: int) -> int:
        got: int = await ctx.call(step, n)
        return got

    @app.workflow(state=Log)
    async def wf(ctx: keel.Context) -> list[str]:
        ctx.state.log.append("a")
        await ctx.call(step, 0)
        ctx.state.log.append("b")  # recorded with the map, which replay does not re-apply
        await ctx.map(item, [1, 2])
        ctx.state.log.append("c")  # recorded with the gather
        await ctx.gather(ctx.call(step, 3), ctx.call(step, 4))
        ctx.state.log.append("d")
        await ctx.wait_for("go")
        ctx.state.log.append("e")
        await ctx.call(step, 9)
        return list(ctx.state.log)

    handle = await app.start(wf)
    assert (await handle.settle(SETTLE)).status is RunStatus.WAITING
    await handle.signal("go", 1)
    assert await handle.result(SETTLE) == ["a", "b", "c", "d", "e"]
    states = await fold(app, handle.id)
    assert states["gather#0"]["log"] == ["a", "b", "c", "d"]
    assert states["signal:go#0"]["log"] == ["a", "b", "c", "d", "e"]
    assert states["step#1"] == (await app.get_run(handle.id)).state
