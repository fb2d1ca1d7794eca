"""Durable waits: for a signal (with an optional deadline) and until a point in time."""

from __future__ import annotations

import asyncio
from typing import Any

from keel.engine.execution import RunExecution, Suspend
from keel.engine.journal import Scope
from keel.engine.serde import digest, from_json
from keel.errors import SignalTimeout, structured
from keel.store.records import StepWrite
from keel.types import StepKind, StepStatus


async def wait_until(ex: RunExecution, wake_at: float) -> None:
    """Hold the run in memory for a short wait; suspend it durably for a long one."""
    remaining = wake_at - ex.rt.clock()
    # A draining worker (Worker.drain) holds no wait at all: the timer is durable.
    if remaining > ex.rt.settings.inline_sleep_max or (remaining > 0 and ex.draining):
        raise Suspend(wake_at=wake_at)
    if remaining > 0:
        await asyncio.sleep(remaining)
        if ex.draining:  # it began meanwhile: hand the run back (due now), not the next attempt
            raise Suspend(wake_at=wake_at)


async def wait_signal(
    ex: RunExecution, scope: Scope, key: str, pos: int, signal: str, timeout: float | None
) -> Any:
    """The journaled wait behind `ctx.wait_for`: the payload, or SignalTimeout, or Suspend.

    The payload is taken and journaled in one write (`RunExecution.take_signal`), so a
    signal is consumed exactly when the wait's outcome is on record.
    """
    op = ex.operation(scope, StepKind.SIGNAL, signal, digest(signal, timeout), key=key, pos=pos)
    if op.done:
        return await op.replay()
    rec = op.recorded
    now = ex.rt.clock()
    started = rec.started_at if rec is not None else now
    deadline = rec.wake_at if rec is not None else (now + timeout if timeout is not None else None)
    ok = op.entry(wake_at=deadline, started=started)
    if scope.state is not None:
        ok.state_delta = scope.state.delta()
    writes: list[StepWrite] = []
    pending = None
    if rec is None:
        # The pending entry carries the same delta: if the run suspends here, the
        # state changes made before the wait are already on record.
        pending = op.entry(StepStatus.PENDING, wake_at=deadline, started=started)
        pending.state_delta = ok.state_delta
        writes.append(StepWrite(pending))
    payload = await ex.take_signal(signal, StepWrite(ok), writes)
    if payload is not None:
        ok.output = from_json(payload)
        ex.journal.add(ok)
        ex.recorded(ok)
        return ok.output
    if pending is not None:
        ex.journal.add(pending)
        ex.recorded(pending)
    if deadline is not None and ex.rt.clock() >= deadline:
        err = SignalTimeout(
            f"no {signal!r} signal arrived within {timeout}s",
            signal=signal,
            timeout=timeout,
            step=key,
        )
        failed = op.entry(
            StepStatus.ERROR, error=structured(err, step=key), wake_at=deadline, started=started
        )
        failed.state_delta = ok.state_delta  # taken above; the commit must not drop it
        await op.commit(failed)
        raise err
    raise Suspend(wake_at=deadline, signals=frozenset({signal}))


async def sleep(ex: RunExecution, scope: Scope, seconds: float) -> None:
    """The journaled timer behind `ctx.sleep`: held in memory when short, else suspended."""
    op = ex.operation(scope, StepKind.SLEEP, "sleep", digest(float(seconds)))
    if op.done:
        await op.replay()
        return
    now = ex.rt.clock()
    if op.recorded is None:
        wake_at = now + max(0.0, float(seconds))
        await op.commit(op.entry(StepStatus.PENDING, wake_at=wake_at, started=now))
    else:
        assert op.recorded.wake_at is not None
        wake_at = op.recorded.wake_at
    remaining = wake_at - now
    if remaining > ex.rt.settings.inline_sleep_max:
        raise Suspend(wake_at=wake_at)
    if remaining > 0:
        await asyncio.sleep(remaining)
    started = op.recorded.started_at if op.recorded is not None else now
    await op.commit(op.entry(wake_at=wake_at, started=started))
