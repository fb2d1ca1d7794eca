"""Signals, durable timers, idempotent start and cancellation."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import keel
from keel.types import StepKind, StepStatus
from tests.limits import WAIT

RESULT_TIMEOUT = WAIT  # a bound, never a timing (tests/limits.py)


async def test_wait_for_returns_the_payload(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.workflow
    async def approval(ctx: keel.Context) -> dict[str, Any]:
        decision = await ctx.wait_for("approve")
        return {"got": decision}

    handle = await app.start(approval)
    info = await handle.settle(RESULT_TIMEOUT)
    assert info.status is keel.RunStatus.WAITING
    assert info.waiting_on == ["approve"]
    assert info.wake_at is None  # no timeout: waits indefinitely
    await handle.signal("approve", {"ok": True, "by": "ada"})
    assert await handle.result(RESULT_TIMEOUT) == {"got": {"ok": True, "by": "ada"}}
    steps = await app.steps(handle.id)
    assert [(s.key, s.kind, s.status) for s in steps] == [
        ("signal:approve#0", StepKind.SIGNAL, StepStatus.OK)
    ]
    assert steps[0].output == {"ok": True, "by": "ada"}


async def test_signals_sent_before_the_wait_are_buffered(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def collect(ctx: keel.Context) -> list[Any]:
        first = await ctx.wait_for("item")
        second = await ctx.wait_for("item")
        return [first, second]

    # Record the run without executing it, signal it twice (queued: it is not waiting
    # yet), then let it run.
    handle = await app.start(collect, id="run-buffered", execute=False)
    assert await handle.status() is keel.RunStatus.PENDING
    assert await app.signal("run-buffered", "item", 1, queue=True) is False
    assert await app.signal("run-buffered", "item", 2, queue=True) is False
    handle = await app.start(collect, id="run-buffered")
    assert await handle.result(RESULT_TIMEOUT) == [1, 2]  # in the order sent
    assert (await handle.info()).attempts == 1  # never had to suspend


async def test_signal_arriving_while_running_is_not_lost(
    make_app: Callable[..., keel.App], wait_until: Any
) -> None:
    app = make_app()
    gate = asyncio.Event()
    entered = asyncio.Event()

    @app.tool
    async def busy() -> str:
        entered.set()
        await gate.wait()
        return "busy done"

    @app.workflow
    async def racing(ctx: keel.Context) -> list[Any]:
        a = await ctx.call(busy)
        return [a, await ctx.wait_for("go")]

    handle = await app.start(racing)
    await entered.wait()
    await app.signal(handle.id, "go", "early", queue=True)
    gate.set()
    assert await handle.result(RESULT_TIMEOUT) == ["busy done", "early"]


async def test_wait_for_timeout_raises_signal_timeout(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.workflow
    async def impatient(ctx: keel.Context) -> str:
        try:
            await ctx.wait_for("approve", timeout=0.1)
        except keel.SignalTimeout as e:
            assert isinstance(e, TimeoutError)
            return f"timed out: {e}"
        return "approved"

    before = time.time()
    handle = await app.start(impatient)
    info = await handle.settle(RESULT_TIMEOUT)
    assert info.status is keel.RunStatus.WAITING
    assert info.wake_at is not None and info.wake_at >= before + 0.1
    out = await handle.result(RESULT_TIMEOUT)
    assert out.startswith("timed out: no 'approve' signal arrived within 0.1s")
    assert time.time() >= before + 0.1  # never before the deadline
    step = (await app.steps(handle.id))[0]
    assert step.status is StepStatus.ERROR
    assert step.error is not None and step.error.type == "SignalTimeout"


async def test_recorded_signal_timeout_replays_with_its_step(
    make_app: Callable[..., keel.App], wait_until: Any
) -> None:
    app = make_app()
    caught: list[tuple[str, str, float]] = []

    @app.workflow
    async def reminder(ctx: keel.Context) -> Any:
        try:
            await ctx.wait_for("reply", timeout=0.05)
        except keel.SignalTimeout as e:
            caught.append((e.step, e.signal, e.timeout))  # type: ignore[attr-defined]
        return await ctx.wait_for("final")

    handle = await app.start(reminder)

    async def waiting_for_final() -> bool:
        return (await handle.info()).waiting_on == ["final"]

    await wait_until(waiting_for_final, "the run to wait for 'final'")
    await handle.signal("final", "done")
    assert await handle.result(RESULT_TIMEOUT) == "done"
    # Live once, then replayed from the journal: the same structured fields both times.
    assert caught == [("signal:reply#0", "reply", 0.05)] * 2


async def test_uncaught_signal_timeout_fails_the_run(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.workflow
    async def strict(ctx: keel.Context) -> Any:
        return await ctx.wait_for("approve", timeout=0.05)

    with pytest.raises(keel.RunFailed) as info:
        await (await app.start(strict)).result(RESULT_TIMEOUT)
    assert info.value.error is not None
    assert info.value.error.type == "SignalTimeout"
    assert info.value.error.step == "signal:approve#0"


async def test_signal_before_the_deadline_wins(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.workflow
    async def patient(ctx: keel.Context) -> Any:
        return await ctx.wait_for("approve", timeout=3600)

    handle = await app.start(patient)
    info = await handle.settle(RESULT_TIMEOUT)
    assert info.status is keel.RunStatus.WAITING and info.wake_at is not None
    await handle.signal("approve", "yes")
    assert await handle.result(RESULT_TIMEOUT) == "yes"


async def test_long_sleep_suspends_the_run_and_completes_after(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app(inline_sleep_max=0.05)
    calls: Counter[str] = Counter()

    @app.tool
    async def before() -> str:
        calls["before"] += 1
        return "b"

    @app.workflow
    async def napper(ctx: keel.Context) -> str:
        x = await ctx.call(before)
        await ctx.sleep(0.4)
        return x + "!"

    start = time.time()
    handle = await app.start(napper)
    info = await handle.settle(RESULT_TIMEOUT)
    assert info.status is keel.RunStatus.WAITING
    assert info.waiting_on == []
    assert info.wake_at is not None and info.wake_at >= start + 0.4
    assert (await app.steps(handle.id))[-1].status is StepStatus.PENDING
    assert await handle.result(RESULT_TIMEOUT) == "b!"
    assert time.time() >= start + 0.4
    info = await handle.info()
    assert info.attempts == 2  # suspended once, woke once
    assert calls == Counter(before=1)
    sleep = [s for s in await app.steps(handle.id) if s.kind is StepKind.SLEEP]
    assert [(s.key, s.status) for s in sleep] == [("sleep#0", StepStatus.OK)]


async def test_short_sleep_stays_inline(make_app: Callable[..., keel.App]) -> None:
    app = make_app(inline_sleep_max=5.0)

    @app.workflow
    async def doze(ctx: keel.Context) -> str:
        await ctx.sleep(0.01)
        await ctx.sleep(0)
        return "awake"

    handle = await app.start(doze)
    assert await handle.result(RESULT_TIMEOUT) == "awake"
    assert (await handle.info()).attempts == 1  # never suspended
    keys = [(s.key, s.status) for s in await app.steps(handle.id)]
    assert keys == [("sleep#0", StepStatus.OK), ("sleep#1", StepStatus.OK)]


async def test_start_with_existing_id_returns_the_same_run(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    calls: Counter[str] = Counter()

    @app.tool
    async def effect(x: int) -> int:
        calls["effect"] += 1
        return x

    @app.workflow
    async def once(ctx: keel.Context, x: int) -> int:
        out: int = await ctx.call(effect, x)
        return out

    h1 = await app.start(once, {"x": 1}, id="same-id")
    assert await h1.result(RESULT_TIMEOUT) == 1
    h2 = await app.start(once, {"x": 1}, id="same-id")
    assert h2.id == h1.id
    assert await h2.result(RESULT_TIMEOUT) == 1
    h3 = await app.start(once, id="same-id")  # no input: attach to the run as it is
    assert await h3.result(RESULT_TIMEOUT) == 1
    with pytest.raises(keel.InputError) as refused:  # another input: never the old result
        await app.start(once, {"x": 2}, id="same-id")
    msg = str(refused.value)
    assert "'same-id'" in msg and '{"x": 1}' in msg and '{"x": 2}' in msg
    assert refused.value.data["recorded_input"] == '{"x": 1}'
    assert refused.value.data["new_input"] == '{"x": 2}'
    assert (await h3.info()).input == {"x": 1}
    assert calls == Counter(effect=1)
    assert len(await app.list_runs()) == 1
    for bad in ("", " x", "a" * 201):
        with pytest.raises(keel.InputError, match="1-200 characters"):
            await app.start(once, {"x": 1}, id=bad)
    assert len(await app.list_runs()) == 1


async def test_existing_id_of_another_workflow_is_a_clear_error(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def first(ctx: keel.Context) -> str:
        return "first"

    @app.workflow
    async def second(ctx: keel.Context) -> str:
        return "second"

    assert await (await app.start(first, id="taken")).result(RESULT_TIMEOUT) == "first"
    with pytest.raises(keel.ConfigError) as info:
        await app.start(second, id="taken")
    msg = str(info.value)
    assert "'taken'" in msg and "'first'" in msg and "'second'" in msg
    assert (await app.get_run("taken")).workflow == "first"


async def test_cancel_a_waiting_run(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.workflow
    async def parked(ctx: keel.Context) -> Any:
        return await ctx.wait_for("never")

    handle = await app.start(parked)
    assert (await handle.settle(RESULT_TIMEOUT)).status is keel.RunStatus.WAITING
    info = await handle.cancel()
    assert info.status is keel.RunStatus.CANCELLED
    assert info.ended_at is not None
    with pytest.raises(keel.RunCancelled, match="cancelled"):
        await handle.result(RESULT_TIMEOUT)
    with pytest.raises(keel.SignalRefused, match="already CANCELLED"):
        await handle.signal("never", 1)
    # Cancelling again is harmless and keeps it CANCELLED.
    assert (await handle.cancel()).status is keel.RunStatus.CANCELLED


async def test_cancel_a_running_run_stops_before_the_next_step(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    calls: Counter[str] = Counter()
    gate = asyncio.Event()
    entered = asyncio.Event()

    @app.tool
    async def slow() -> str:
        calls["slow"] += 1
        entered.set()
        await gate.wait()
        return "slow"

    @app.tool
    async def after(x: str) -> str:
        calls["after"] += 1
        return x

    @app.workflow
    async def long_job(ctx: keel.Context) -> str:
        x = await ctx.call(slow)
        return await ctx.call(after, x)  # type: ignore[no-any-return]

    handle = await app.start(long_job)
    await entered.wait()
    assert (await handle.cancel()).status is keel.RunStatus.CANCELLED
    gate.set()
    with pytest.raises(keel.RunCancelled):
        await handle.result(RESULT_TIMEOUT)
    await app.stop_worker()  # waits for the execution to wind down
    assert await handle.status() is keel.RunStatus.CANCELLED
    assert calls["after"] == 0
    assert [s.key for s in await app.steps(handle.id)] == []


async def test_signal_to_finished_or_unknown_run_is_a_clear_error(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def quick(ctx: keel.Context) -> str:
        return "ok"

    handle = await app.start(quick)
    assert await handle.result(RESULT_TIMEOUT) == "ok"
    with pytest.raises(keel.SignalRefused) as info:
        await app.signal(handle.id, "late", {"x": 1}, queue=True)  # not even queued
    assert "already SUCCEEDED" in str(info.value)
    assert "'late' was not delivered" in str(info.value)
    with pytest.raises(keel.RunNotFound):
        await app.signal("no-such-run", "late")


async def test_signal_payload_must_be_json(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.workflow
    async def waits(ctx: keel.Context) -> Any:
        return await ctx.wait_for("data")

    handle = await app.start(waits)
    await handle.settle(RESULT_TIMEOUT)
    with pytest.raises(keel.SerializationError, match="signal 'data' payload"):
        await handle.signal("data", object())
    await handle.signal("data", [1, "two"])
    assert await handle.result(RESULT_TIMEOUT) == [1, "two"]


async def test_result_of_a_waiting_run_reports_suspension(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def waits(ctx: keel.Context) -> Any:
        return await ctx.wait_for("approve")

    handle = await app.start(waits)
    await handle.settle(RESULT_TIMEOUT)
    with pytest.raises(keel.RunSuspended, match="WAITING for approve"):
        await handle.result(timeout=0.05)


async def test_a_signal_the_run_does_not_wait_for_is_refused_naming_what_it_waits_for(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def parked(ctx: keel.Context) -> Any:
        return await ctx.wait_for("go")

    handle = await app.start(parked)
    assert (await handle.settle(RESULT_TIMEOUT)).waiting_on == ["go"]
    with pytest.raises(keel.SignalRefused) as refused:
        await handle.signal("wrongname", 1)
    msg = str(refused.value)
    assert "not waiting for signal 'wrongname'" in msg and "it waits for 'go'" in msg
    assert "queue=True" in msg
    assert refused.value.data["waiting_on"] == ["go"]
    assert (await handle.info()).status is keel.RunStatus.WAITING  # untouched
    with pytest.raises(keel.SignalRefused, match="Keel's own"):  # people decide those
        await handle.signal("review:rev_1", {"status": "approved"}, queue=True)
    assert await handle.signal("go", "right") is True  # the run was waiting: it resumes
    assert await handle.result(RESULT_TIMEOUT) == "right"
    assert [s.key for s in await app.steps(handle.id)] == ["signal:go#0"]


async def test_queue_keeps_a_signal_for_a_later_wait(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.workflow
    async def two_waits(ctx: keel.Context) -> list[Any]:
        first = await ctx.wait_for("first")
        return [first, await ctx.wait_for("second")]

    handle = await app.start(two_waits)
    assert (await handle.settle(RESULT_TIMEOUT)).waiting_on == ["first"]
    with pytest.raises(keel.SignalRefused, match="it waits for 'first'"):
        await handle.signal("second", 2)
    assert await handle.signal("second", 2, queue=True) is False  # kept for later
    assert await handle.signal("first", 1) is True
    assert await handle.result(RESULT_TIMEOUT) == [1, 2]


async def test_a_second_signal_for_one_wait_is_reported_not_silently_kept(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def once(ctx: keel.Context) -> Any:
        return await ctx.wait_for("go")

    handle = await app.start(once)
    await handle.settle(RESULT_TIMEOUT)
    await app.stop_worker()  # nothing takes the first signal yet
    assert await handle.signal("go", "first") is True
    with pytest.raises(keel.SignalRefused) as refused:
        await handle.signal("go", "second")
    assert "has not taken the 'go' signal sent before (1 waiting)" in str(refused.value)
    assert refused.value.data["queued"] == 1
    await app.start(once, id=handle.id)  # a worker again: it takes the first one
    assert await handle.result(RESULT_TIMEOUT) == "first"
    with pytest.raises(keel.SignalRefused, match="already SUCCEEDED"):  # never taken now
        await handle.signal("go", "late", queue=True)


async def test_a_run_waiting_on_a_timer_refuses_signals(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app(inline_sleep_max=0.0)

    @app.workflow
    async def sleeper(ctx: keel.Context) -> str:
        await ctx.sleep(3600)
        return "woke"

    handle = await app.start(sleeper)
    assert (await handle.settle(RESULT_TIMEOUT)).status is keel.RunStatus.WAITING
    with pytest.raises(keel.SignalRefused, match="it waits for a timer only"):
        await handle.signal("go")
    await handle.cancel()
