"""Irreversible tools: an intent before the call, never a blind re-run after an interruption."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.types import StepStatus
from tests.backends import fresh_url
from tests.limits import WAIT


class _Interrupted(Exception):
    pass


def _app(tmp_path: Path) -> keel.App:
    return keel.App(fresh_url(tmp_path))


async def _interrupt_mid_call(
    app: keel.App, wf: object, run_id: str, started: asyncio.Event
) -> None:
    """Start the run, stop the worker while the irreversible tool is in flight."""
    await app.start(wf, {}, id=run_id)
    await asyncio.wait_for(started.wait(), WAIT)
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

    result = await (await app.start(pay, {}, id="p1")).result(WAIT)
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
        await (await app.start(pay, {}, id="w1")).result(WAIT)
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
    assert await (await app.start(pay, {}, id="r1")).result(WAIT) == "tx-7"
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
    assert await (await app.start(pay, {}, id="n1")).result(WAIT) == "tx-9"
    assert calls == 2
    await app.close()


def test_reconcile_requires_irreversible(tmp_path: Path) -> None:
    app = _app(tmp_path)
    with pytest.raises(keel.ConfigError, match="irreversible"):

        @app.tool(reconcile=lambda key: None)
        async def plain() -> None: ...


async def test_unknown_outcome_with_a_human_fallback_asks_a_person(worker_harness: Any) -> None:
    """SIGKILL between the intent and the result of an irreversible tool that declares
    `Fallback.human`: the run waits for a person, who says what became of the effect."""
    h = worker_harness
    module = "tests.apps.irreversible_app"
    app = h.app(module)
    for run_id, decision in (("pay-1", "resolve"), ("pay-2", "reject")):
        proc = h.spawn(module)
        await h.wait_ready(proc)
        await app.start("pay", {"amount": 120}, id=run_id, execute=False)
        flag = h.data / "in-flight"
        await h.wait_until(flag.exists, timeout=WAIT, what="the wire to start", procs=[proc])
        await h.kill(proc, app, run_id)
        flag.unlink()

        h.spawn(module)
        info = await h.wait_status(app, run_id, "WAITING", timeout=WAIT)
        assert info.waiting_on == [f"escalation:{run_id}:wire#0"]
        esc = await app.escalations.get(f"{run_id}:wire#0")
        assert esc.queue == "payments" and esc.packet.tool == "wire"
        reason = esc.packet.reason
        assert reason.startswith("outcome unknown:")
        assert f"idempotency key '{run_id}:wire#0'" in reason and "resolve this" in reason
        assert esc.packet.error is not None and esc.packet.error.type == "OutcomeUnknown"
        assert esc.packet.input == {"amount": 120}
        if decision == "resolve":
            await app.escalations.resolve(esc.id, "tx-from-the-bank", by="dana")
            done = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT)
            assert done.result == "paid: tx-from-the-bank"
        else:
            await app.escalations.reject(esc.id, "the bank has no such transfer", by="dana")
            done = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT)
            assert done.result.startswith("not paid: ")
            assert "the bank has no such transfer" in done.result
        for p in h.procs:
            if p.alive():
                await h.kill(p, app)
    # the effect happened once per run and was never attempted again
    assert h.execution_counts() == {"pay-1:wire#0": 1, "pay-2:wire#0": 1}
    assert h.effect_dupes() == []
