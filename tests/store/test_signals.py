"""JournalStore conformance: signals and timers.

Signals are buffered until taken, taken once, reach only the run they were sent to, wake
a run WAITING for them, honour `only_if_waiting`, and are refused by ended runs. A
WAITING run's timer is due by the store's clock.
"""

from __future__ import annotations

import pytest

from keel.errors import RunNotFound, SignalRefused
from keel.store import Store
from keel.store.records import StepWrite
from keel.types import RunStatus, StepKind
from tests.store.kit import (
    claim,
    claimed,
    create,
    finish,
    rec,
    signal,
    status,
    suspend,
)


def _taken(run_id: str, name: str, pos: int) -> StepWrite:
    return StepWrite(rec(run_id, f"signal:{name}#{pos}", pos, kind=StepKind.SIGNAL))


async def _take(store: Store, run_id: str, owner: str, name: str, pos: int) -> bytes | None:
    return await store.take_signal(run_id, owner, name, _taken(run_id, name, pos), [])


async def test_a_signal_sent_while_running_is_buffered_and_taken_once(store: Store) -> None:
    await claimed(store)
    before = await signal(store, "r1", "go", b'"yes"')
    assert before.status is RunStatus.RUNNING  # the run as it was before the signal
    assert await _take(store, "r1", "A", "go", 0) == b'"yes"'
    assert await _take(store, "r1", "A", "go", 1) is None  # delivered once
    assert {s.key: s.output for s in await store.load_steps("r1")} == {"signal:go#0": "yes"}


async def test_signals_are_taken_oldest_first(store: Store) -> None:
    await claimed(store)
    for payload in (b"1", b"2", b"3"):
        await signal(store, "r1", "go", payload)
    assert [await _take(store, "r1", "A", "go", i) for i in range(4)] == [b"1", b"2", b"3", None]


async def test_a_signal_reaches_only_its_run_and_name(store: Store) -> None:
    await claimed(store, "r1")
    await claimed(store, "r2")
    await signal(store, "r1", "go", b'"for r1"')
    await signal(store, "r1", "other", b'"not go"')
    assert await _take(store, "r2", "A", "go", 0) is None
    assert await _take(store, "r1", "A", "go", 0) == b'"for r1"'
    assert await _take(store, "r1", "A", "other", 1) == b'"not go"'


async def test_a_signal_wakes_the_run_waiting_for_it(store: Store) -> None:
    await claimed(store)
    assert await suspend(store, "r1", "A", waiting_on=["go"]) is RunStatus.WAITING
    run = await store.get_run("r1")
    assert run is not None
    assert (run.status, run.waiting_on, run.lease_owner) == (RunStatus.WAITING, ["go"], None)
    assert await claim(store, "B") == []
    await signal(store, "r1", "other")  # not what it waits for
    assert await status(store, "r1") is RunStatus.WAITING
    await signal(store, "r1", "go", b'"yes"')
    assert await status(store, "r1") is RunStatus.PENDING
    assert await claim(store, "B") == ["r1"]
    assert await _take(store, "r1", "B", "go", 0) == b'"yes"'


async def test_a_signal_racing_the_suspension_requeues_the_run(store: Store) -> None:
    await claimed(store)
    await signal(store, "r1", "go")  # arrives while the run is still RUNNING
    assert await suspend(store, "r1", "A", waiting_on=["go"]) is RunStatus.PENDING
    assert await claim(store, "B") == ["r1"]


async def test_only_if_waiting_refuses_in_the_same_transaction(store: Store) -> None:
    await claimed(store)
    with pytest.raises(SignalRefused, match="RUNNING, not waiting") as refused:
        await signal(store, "r1", "go", only_if_waiting=True)
    assert refused.value.data["status"] == "RUNNING"
    await suspend(store, "r1", "A", waiting_on=["go"])
    with pytest.raises(SignalRefused, match="it waits for 'go'"):
        await signal(store, "r1", "other", only_if_waiting=True)
    before = await signal(store, "r1", "go", only_if_waiting=True)
    assert (before.status, before.waiting_on) == (RunStatus.WAITING, ["go"])
    with pytest.raises(SignalRefused, match=r"\(1 waiting\)"):
        await signal(store, "r1", "go", b"2", only_if_waiting=True)
    await signal(store, "r1", "go", b"2")  # without it, the signal is buffered
    assert await claim(store, "B") == ["r1"]
    assert await _take(store, "r1", "B", "go", 0) == b"1"
    assert await _take(store, "r1", "B", "go", 1) == b"2"


async def test_ended_and_unknown_runs_refuse_signals(store: Store) -> None:
    await claimed(store)
    await finish(store, "r1", "A")
    with pytest.raises(SignalRefused, match="already SUCCEEDED"):
        await signal(store, "r1", "go")
    with pytest.raises(RunNotFound):
        await signal(store, "missing", "go")


async def test_a_lost_lease_takes_no_signal(store: Store) -> None:
    from keel.errors import LeaseLost

    await claimed(store)
    await signal(store, "r1", "go")
    with pytest.raises(LeaseLost):
        await _take(store, "r1", "B", "go", 0)
    assert await _take(store, "r1", "A", "go", 0) == b"1"  # still there for its owner


# -- timers -----------------------------------------------------------------------------


async def test_a_timer_in_the_past_is_due(store: Store) -> None:
    await claimed(store)
    wake = await store.now() - 1
    assert await suspend(store, "r1", "A", wake_at=wake) is RunStatus.WAITING
    assert await claim(store, "B") == ["r1"]
    run = await store.get_run("r1")
    assert run is not None and run.wake_at is None


async def test_a_timer_in_the_future_is_not_due(store: Store) -> None:
    await claimed(store)
    wake = await store.now() + 3600
    await suspend(store, "r1", "A", wake_at=wake, waiting_on=["go"])
    run = await store.get_run("r1")
    assert run is not None and run.status is RunStatus.WAITING and run.wake_at is not None
    assert await claim(store, "B") == []
    await signal(store, "r1", "go")  # a signal it waits for still wakes it early
    assert await claim(store, "B") == ["r1"]


async def test_a_waiting_run_without_a_timer_waits(store: Store) -> None:
    await claimed(store)
    await suspend(store, "r1", "A", waiting_on=["go"])
    await create(store, "r2")
    assert await claim(store, "B") == ["r2"]


async def test_a_worker_clock_ahead_does_not_make_a_timer_due_early(store: Store) -> None:
    """`wake_at` counts from the caller's `now`: a worker whose clock runs an hour ahead
    asking for a timer one hour out gets one an hour from the store's now."""
    await claimed(store)
    skewed = await store.now() + 3600
    await store.suspend_run("r1", "A", skewed + 3600, [], [], skewed)
    assert await claim(store, "B") == []


async def test_a_worker_clock_behind_does_not_delay_a_due_timer(store: Store) -> None:
    await claimed(store)
    skewed = await store.now() - 3600
    await store.suspend_run("r1", "A", skewed - 1, [], [], skewed)
    assert await claim(store, "B") == ["r1"]
