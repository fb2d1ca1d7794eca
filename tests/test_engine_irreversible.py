"""Irreversible tools: an intent before the call, never a blind re-run after an interruption."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import keel
from keel.types import StepStatus


class _Interrupted(Exception):
    pass


def _app(tmp_path: Path) -> keel.App:
    return keel.App(f"sqlite:///{tmp_path}/keel.db")


async def _interrupt_mid_call(
    app: keel.App, wf: object, run_id: str, started: asyncio.Event
) -> None:
    """Start the run, stop the worker while the irreversible tool is in flight."""
    await app.start(wf, {}, id=run_id)
    await asyncio.wait_for(started.wait(), 10)
    await app.stop_worker()  # cancels the run mid-call: it goes back to PENDING


async def test_intent_is_recorded_before_the_call(tmp_path: Path) -> None:
    app = _app(tmp_path)
    seen: list[list[str]] = []

    @app.tool(irreversible=True, approval=False)
    async def charge(amount: int) -> str:
        info = keel.current_step()
        assert info is not None
        seen.append([s.status.value for s in await app.steps(info.run_id)])
        return f"charged {amount} as {info.idempotency_key}"

    @app.workflow()
    async def pay(ctx: keel.Context) -> str:
        return await ctx.call(charge, 5)

    result = await (await app.start(pay, {}, id="p1")).result(10)
    assert result == "charged 5 as p1:charge#0"
    assert seen == [["pending"]]  # the intent was durable before the effect ran
    steps = await app.steps("p1")
    assert [(s.key, s.status) for s in steps] == [("charge#0", StepStatus.OK)]
    await app.close()


async def test_interrupted_call_without_reconcile_is_outcome_unknown(tmp_path: Path) -> None:
    app = _app(tmp_path)
    calls = 0
    started = asyncio.Event()

    @app.tool(irreversible=True, approval=False)
    async def wire(amount: int) -> str:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(30)
        return "wired"

    @app.workflow()
    async def pay(ctx: keel.Context) -> str:
        return await ctx.call(wire, 100)

    await _interrupt_mid_call(app, pay, "w1", started)
    assert (await app.get_run("w1")).status is keel.RunStatus.PENDING

    with pytest.raises(keel.RunFailed) as caught:
        await (await app.start(pay, {}, id="w1")).result(10)
    assert calls == 1  # never re-run blindly
    err = caught.value.error
    assert err is not None and err.type == "OutcomeUnknown"
    assert "w1:wire#0" in err.message and err.data["tool"] == "wire"
    await app.close()


async def test_reconcile_returns_the_effect_of_the_interrupted_call(tmp_path: Path) -> None:
    app = _app(tmp_path)
    ledger: dict[str, str] = {}
    calls = 0
    started = asyncio.Event()

    async def find(key: str, amount: int) -> str:
        if key not in ledger:
            raise keel.EffectNotApplied("no such transfer")
        return ledger[key]

    @app.tool(irreversible=True, approval=False, reconcile=find)
    async def wire(amount: int) -> str:
        nonlocal calls
        calls += 1
        info = keel.current_step()
        assert info is not None
        ledger[info.idempotency_key] = f"tx-{amount}"  # the effect lands...
        started.set()
        await asyncio.sleep(30)  # ...and the worker stops before the result is journaled
        return "unreachable"

    @app.workflow()
    async def pay(ctx: keel.Context) -> str:
        return await ctx.call(wire, 7)

    await _interrupt_mid_call(app, pay, "r1", started)
    assert await (await app.start(pay, {}, id="r1")).result(10) == "tx-7"
    assert calls == 1
    (step,) = await app.steps("r1")
    assert step.status is StepStatus.OK and step.attempts == 2
    await app.close()


async def test_reconcile_not_applied_runs_the_tool_again(tmp_path: Path) -> None:
    app = _app(tmp_path)
    calls = 0
    started = asyncio.Event()

    async def find(key: str, amount: int) -> str:
        raise keel.EffectNotApplied("the provider has no record of it")

    @app.tool(irreversible=True, approval=False, reconcile=find)
    async def wire(amount: int) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await asyncio.sleep(30)
        return f"tx-{amount}"

    @app.workflow()
    async def pay(ctx: keel.Context) -> str:
        return await ctx.call(wire, 9)

    await _interrupt_mid_call(app, pay, "n1", started)
    assert await (await app.start(pay, {}, id="n1")).result(10) == "tx-9"
    assert calls == 2
    await app.close()


def test_reconcile_requires_irreversible(tmp_path: Path) -> None:
    app = _app(tmp_path)
    with pytest.raises(keel.ConfigError, match="irreversible"):

        @app.tool(reconcile=lambda key: None)
        async def plain() -> None: ...
