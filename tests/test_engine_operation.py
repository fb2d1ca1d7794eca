"""The durable-operation primitive (`ctx.operation`): replay, divergence, lost leases and
the atomicity of an entry with the request to a person it opens."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

import keel
from keel.engine.execution import RunExecution
from keel.errors import InputError, NonDeterminismError
from keel.store import Claimed
from keel.types import RunStatus, StepKind, StepStatus
from tests.limits import WAIT


async def _resume(app: keel.App, handle: Any, signal: str = "go") -> Any:
    await handle.settle(timeout=WAIT)
    await app.signal(handle.id, signal, None)
    return await handle.result(timeout=WAIT)


async def test_replay_returns_the_recorded_value_without_running_again(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    ran: list[str] = []

    async def lookup(who: str) -> dict[str, Any]:
        ran.append(who)
        return {"who": who, "n": len(ran)}

    @app.workflow
    async def wf(ctx: keel.Context, who: str) -> dict[str, Any]:
        op = ctx.operation("lookup", who)
        value = await op.run(lambda: lookup(who), dict)
        await ctx.wait_for("go")  # the run suspends; the next execution replays `lookup`
        return {"value": value, "key": op.key}

    handle = await app.start(wf, {"who": "ada"})
    out = await _resume(app, handle)
    assert out == {"value": {"who": "ada", "n": 1}, "key": "lookup#0"}
    assert ran == ["ada"]
    [rec] = [s for s in await app.steps(handle.id) if s.key == "lookup#0"]
    assert rec.kind is StepKind.TOOL and rec.status is StepStatus.OK


async def test_replay_raises_the_recorded_error_again(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    failures: list[str] = []

    @app.workflow
    async def wf(ctx: keel.Context) -> list[str]:
        seen: list[str] = []
        op = ctx.operation("check")
        try:
            if op.done:
                await op.replay()
            failures.append("ran")
            await op.fail(InputError("the answer was not a number", field="n"))
        except InputError as exc:
            seen.append(f"{type(exc).__name__}: {exc.message} ({exc.data.get('field')})")
        await ctx.wait_for("go")
        return seen

    handle = await app.start(wf, {})
    assert await _resume(app, handle) == ["InputError: the answer was not a number (n)"]
    assert failures == ["ran"]  # the second execution replayed the error, ran nothing


async def test_divergence_names_both_steps(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    name = {"now": "first"}

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        op = ctx.operation(name["now"], 1)
        if not op.done:
            await op.finish("x")
        await ctx.wait_for("go")
        return "done"

    handle = await app.start(wf, {})
    await handle.settle(timeout=WAIT)
    name["now"] = "second"  # the code changed while the run waited
    await app.signal(handle.id, "go", None)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(timeout=WAIT)
    err = info.value.error
    assert err is not None and err.type == NonDeterminismError.__name__
    assert "'first#0'" in err.message and "'second#0'" in err.message


async def test_changed_inputs_are_a_divergence_showing_both(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    question = {"now": "rain?"}

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        op = ctx.operation("oracle", question["now"], shown=question["now"])
        if not op.done:
            await op.finish("yes")
        await ctx.wait_for("go")
        return "done"

    handle = await app.start(wf, {})
    await handle.settle(timeout=WAIT)
    question["now"] = "snow?"
    await app.signal(handle.id, "go", None)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(timeout=WAIT)
    err = info.value.error
    assert err is not None and err.type == NonDeterminismError.__name__
    assert err.data["recorded"] == err.data["new"] == "oracle#0"
    assert "snow?" in err.data["new_input"]


async def _stale_execution(app: keel.App, workflow: str) -> RunExecution:
    """An execution of a new run by a worker that holds no lease on it (lost, or stolen)."""
    run, _ = await app.store.create_run(f"r-{workflow}", workflow, b"{}", time.time())
    wf = app.registry.workflows[workflow]
    return RunExecution(app.runtime, Claimed(run, resumed=False), "stale-worker", wf)


async def test_a_lost_lease_abandons_the_run_without_writing(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    ran: list[int] = []

    @app.workflow
    async def effect(ctx: keel.Context) -> int:
        ctx.uuid()  # a buffered value: it must not land either
        op = ctx.operation("effect")

        async def act() -> int:
            ran.append(1)
            return 7

        return int(await op.run(act))

    ex = await _stale_execution(app, "effect")
    assert await ex.execute() is None  # abandoned: no status written, no error raised
    assert ran == [1] and ex.lost  # the effect ran; its outcome could not be committed
    assert await app.steps(ex.run_id) == []
    run = await app.get_run(ex.run_id)
    assert run.status is RunStatus.PENDING  # for a worker that holds the lease


async def test_a_review_lands_with_its_entry_or_not_at_all(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def asks(ctx: keel.Context) -> Any:
        return await ctx.approval("ship it", queue="ops")

    # refused under a lost lease: neither the PENDING entry nor the request exists
    ex = await _stale_execution(app, "asks")
    assert await ex.execute() is None
    assert await app.steps(ex.run_id) == []
    assert await app.approvals.list(queue="ops") == []

    # the same write with the lease: both, in one go
    handle = await app.start(asks, {})
    info = await handle.settle(timeout=WAIT)
    assert info.status is RunStatus.WAITING
    [request] = await app.approvals.list(queue="ops")
    [entry] = [s for s in await app.steps(handle.id) if "/" not in s.key]  # not its wait
    assert entry.status is StepStatus.PENDING and request.step == entry.key == "approval:ship it#0"
    await app.approvals.approve(request.id, by="ada")
    decision = await handle.result(timeout=WAIT)
    assert decision["status"] == "approved"


async def test_meter_stores_usage_with_the_outcome(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.workflow
    async def metered(ctx: keel.Context) -> str:
        op = ctx.operation("oracle.call", kind=StepKind.LLM)

        async def call() -> str:
            op.meter(model="m", input_tokens=3, output_tokens=4, cost_usd=0.5, cache_hit=False)
            return "ok"

        return str(await op.run(call))

    handle = await app.start(metered, {})
    assert await handle.result(timeout=WAIT) == "ok"
    assert await app.store.spent(run_id=handle.id) == pytest.approx(0.5)


async def test_after_a_hard_stop_no_operation_opens(make_app: Callable[..., keel.App]) -> None:
    """Fallback.fail is final: a workflow that catches it cannot go on to wait or ask."""
    app = make_app()

    @app.tool(retry=keel.Retry(attempts=1), fallback=keel.Fallback.fail())
    async def charge() -> str:
        raise RuntimeError("card declined")

    @app.workflow
    async def stubborn(ctx: keel.Context) -> str:
        try:
            await ctx.call(charge)
        except Exception:
            pass  # swallowed: the hard stop must still hold
        await ctx.approval("charge again by hand")
        return "went on"

    handle = await app.start(stubborn)
    info = await handle.settle(WAIT)
    assert info.status is RunStatus.FAILED
    assert info.error is not None and "card declined" in info.error.message
    assert await app.approvals.list(status="all") == []
