"""`except keel.StepError` catches every way a step can fail, live and on replay.

The docs promise that a step without a fallback raises `keel.StepError`; these tests
hold every failure kind to it, and check that the messages say what happened.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel.llm import Gateway, Reply, ScriptedModel
from keel.policy.retry import NO_RETRY
from keel.types import RunStatus
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)


class Account(BaseModel):
    id: str
    tier: str


def test_every_step_failure_class_is_a_step_error() -> None:
    kinds = [
        keel.ValidationFailed,
        keel.BudgetExceeded,
        keel.CircuitOpen,
        keel.OutcomeUnknown,
        keel.RetryableError,
        keel.SerializationError,
        keel.EscalationRejected,
        keel.ApprovalRejected,
        keel.ApprovalTimedOut,
        keel.ReviewRejected,
        keel.SignalTimeout,
        keel.MapFailed,
        keel.CheckpointFailed,
        keel.LowConfidence,
        keel.CassetteMiss,
        keel.AgentTurnLimit,
        keel.ModelUnavailable,
    ]
    assert [k for k in kinds if not issubclass(k, keel.StepError)] == []
    # ... and errors about the run or the code are not step failures
    for other in (keel.ConfigError, keel.InputError, keel.NonDeterminismError, keel.RunFailed):
        assert not issubclass(other, keel.StepError)
    assert issubclass(keel.SignalTimeout, TimeoutError)


async def test_except_step_error_catches_every_failure_kind_live_and_on_replay(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    calls: dict[str, int] = {}

    def count(name: str) -> None:
        calls[name] = calls.get(name, 0) + 1

    @app.tool
    async def boom() -> int:
        count("boom")
        raise ValueError("bad data")

    @app.tool(timeout=0.05)
    async def slow() -> int:
        count("slow")
        await asyncio.sleep(30)
        return 1

    @app.tool(validate=lambda v: None if v > 0 else "must be positive")
    async def negative() -> int:
        count("negative")
        return -1

    @app.tool
    async def wrong_type() -> Account:
        count("wrong_type")
        return {"id": "A-1"}  # type: ignore[return-value]  # no tier

    @app.tool(retry=keel.Retry(attempts=5, backoff=0.001, budget=1))
    async def flaky() -> int:
        count("flaky")
        raise keel.RetryableError("upstream busy")

    @app.tool(breaker=keel.CircuitBreaker(failures=1, reset_after=3600))
    async def broken() -> int:
        count("broken")
        raise ConnectionError("refused")

    @app.tool
    async def unstorable() -> Any:
        count("unstorable")
        return object()

    @app.tool(retry=keel.Retry(attempts=2, backoff=0.001))
    async def busy() -> int:
        count("busy")
        raise keel.RetryableError("still busy")

    @app.tool
    async def item(i: int) -> int:
        if i:
            raise ValueError(f"item {i}")
        return i

    def fails_check(state: Any) -> str:
        return "never good enough"

    async def attempt(ctx: keel.Context, what: str, step: Any) -> list[Any]:
        try:
            await step
        except keel.StepError as e:
            return [what, e.error.type, e.error.step]
        return [what, "no error", None]

    @app.workflow
    async def everything(ctx: keel.Context) -> list[list[Any]]:
        out = [
            await attempt(ctx, "raised", ctx.call(boom)),
            await attempt(ctx, "timeout", ctx.call(slow)),
            await attempt(ctx, "validation", ctx.call(negative)),
            await attempt(ctx, "return type", ctx.call(wrong_type)),
            await attempt(ctx, "budget", ctx.call(flaky)),
            await attempt(ctx, "breaker trips", ctx.call(broken)),
            await attempt(ctx, "breaker open", ctx.call(broken)),
            await attempt(ctx, "serialization", ctx.call(unstorable)),
            await attempt(ctx, "retries spent", ctx.call(busy)),
            await attempt(ctx, "map", ctx.map(item, [0, 1])),
            await attempt(ctx, "signal timeout", ctx.wait_for("never", timeout=0.01)),
        ]

        async def phase() -> None:
            async with ctx.phase("checked", check=fails_check):
                await ctx.call(item, 0)

        out.append(await attempt(ctx, "checkpoint", phase()))
        await ctx.wait_for("go")  # suspend: the second execution replays all of the above
        return out

    handle = await app.start(everything)
    info = await handle.settle(RESULT)
    assert info.status is RunStatus.WAITING, info.error
    live = calls.copy()
    await app.signal(handle.id, "go", queue=True)  # it may still be in its 'never' wait
    got = await handle.result(RESULT)
    assert calls == live  # nothing ran again: every failure came back from the journal
    assert got == [
        ["raised", "ValueError", "boom#0"],
        ["timeout", "TimeoutError", "slow#0"],
        ["validation", "ValidationFailed", "negative#0"],
        ["return type", "ValidationFailed", "wrong_type#0"],
        ["budget", "BudgetExceeded", "flaky#0"],
        ["breaker trips", "ConnectionError", "broken#0"],
        ["breaker open", "CircuitOpen", "broken#1"],
        ["serialization", "SerializationError", "unstorable#0"],
        ["retries spent", "RetryableError", "busy#0"],
        ["map", "MapFailed", "map:item#0"],
        ["signal timeout", "SignalTimeout", "signal:never#0"],
        ["checkpoint", "CheckpointFailed", "phase:checked#0"],
    ]
    steps = {s.key: s for s in await app.steps(handle.id)}
    assert steps["wrong_type#0"].output is None  # the bad value was never stored as a result
    assert steps["wrong_type#0"].error is not None
    assert "does not fit its return type Account" in steps["wrong_type#0"].error.message
    assert "tier: Field required" in steps["wrong_type#0"].error.message


async def test_model_failures_are_step_errors(make_app: Callable[..., keel.App]) -> None:
    class Label(BaseModel):
        label: str

    model = ScriptedModel(lambda m: Reply(content=json.dumps({"label": "x"}), logprobs=[-5.0]))
    app = keel.App(make_app().store_url, llm=Gateway({"m": model}, retry=NO_RETRY))

    @app.workflow
    async def classify(ctx: keel.Context) -> str:
        try:
            await ctx.llm.structured(Label, "x", min_confidence=0.99, on_low_confidence="raise")
        except keel.StepError as e:
            return e.error.type
        return "no error"

    try:
        assert await (await app.start(classify)).result(RESULT) == "LowConfidence"
    finally:
        await app.close()


async def test_timeouts_and_deadlines_say_which_limit(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.tool(timeout=0.05)
    async def hang() -> None:
        await asyncio.sleep(30)

    @app.tool
    async def own_timeout() -> None:
        raise TimeoutError("the bank's API timed out")

    @app.tool(
        retry=keel.Retry(attempts=100, backoff=0.05, multiplier=1, jitter=False, deadline=0.2)
    )
    async def unreachable() -> None:
        raise ConnectionError("no route to host")

    @app.workflow
    async def wf(ctx: keel.Context) -> list[str]:
        out = []
        for tool in (hang, own_timeout, unreachable):
            try:
                await ctx.call(tool)
            except keel.StepError as e:
                out.append(str(e))
        return out

    hang_msg, own_msg, deadline_msg = await (await app.start(wf)).result(RESULT)
    assert "tool 'hang' did not finish within its timeout of 0.05s" in hang_msg
    assert "TimeoutError: TimeoutError" not in hang_msg
    assert "the bank's API timed out" in own_msg  # a tool's own timeout keeps its message
    assert "ConnectionError: no route to host" in deadline_msg
    assert "retry deadline of 0.2s" in deadline_msg


@pytest.mark.parametrize("kind", ["approval", "escalation"])
async def test_rejections_by_people_are_step_errors(
    make_app: Callable[..., keel.App], kind: str
) -> None:
    app = make_app()

    @app.tool(irreversible=True)
    async def send(to: str) -> str:
        return to

    @app.tool(fallback=keel.Fallback.human(queue="ops"))
    async def lookup(account_id: str) -> str:
        raise ValueError("no such account")

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        try:
            await ctx.call(send if kind == "approval" else lookup, "x")
        except keel.StepError as e:
            return e.error.type
        return "no error"

    handle = await app.start(wf)
    assert (await handle.settle(RESULT)).status is RunStatus.WAITING
    if kind == "approval":
        (req,) = await app.approvals.list()
        await app.approvals.reject(req.id, "not today", by="dana")
        expected = "ApprovalRejected"
    else:
        (esc,) = await app.escalations.list()
        await app.escalations.reject(esc.id, "no", by="dana")
        expected = "EscalationRejected"
    assert await handle.result(RESULT) == expected
