"""JournalStore conformance: queue leases, decided by the store's own clock.

A live lease is never claimable by another owner (whatever time a worker thinks it is),
an expired one is; renew returns only the ids still held; a write by an owner whose lease
was lost raises LeaseLost and writes nothing.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

from keel.errors import LeaseLost
from keel.store import Store
from keel.store.journal import JournalStore
from keel.store.records import WorkerBeat
from keel.types import RunStatus
from tests.store.kit import (
    LEASE,
    cancel,
    claim,
    claimed,
    commit,
    create,
    finish,
    release,
    renew,
    status,
    step,
    until_store_time,
)


async def test_claim_respects_the_capacity_limit_oldest_first(store: Store) -> None:
    for i in range(5):
        await create(store, f"r{i}", now=1_000.0 + i)
    assert await claim(store, "A", limit=2) == ["r0", "r1"]
    assert await claim(store, "A", limit=2) == ["r2", "r3"]
    assert await claim(store, "A", limit=2) == ["r4"]
    assert await claim(store, "A", limit=2) == []


async def test_claim_takes_only_the_workflows_and_ids_asked_for(store: Store) -> None:
    await create(store, "mine")
    await create(store, "also-mine")
    await create(store, "theirs", "not-mine")
    assert await claim(store, "A", workflows=[]) == []
    assert await claim(store, "A", ids=["mine", "theirs", "gone"]) == ["mine"]
    assert await claim(store, "A") == ["also-mine"]
    assert await status(store, "theirs") is RunStatus.PENDING


async def test_a_live_lease_is_not_claimable_by_anyone_else(store: Store) -> None:
    await create(store, "r1")
    got = await store.get_run("r1")
    assert got is not None and got.attempts == 0
    assert await claim(store, "A") == ["r1"]
    run = await store.get_run("r1")
    assert run is not None
    assert (run.status, run.lease_owner, run.attempts) == (RunStatus.RUNNING, "A", 1)
    assert await claim(store, "B") == []
    assert await claim(store, "A") == []  # not twice by its owner either
    assert await claim(store, "B", ids=["r1"]) == []


def test_leases_take_no_worker_time() -> None:
    """Lease expiry is the store's clock: `claim` and `renew` take no `now` a worker's
    skewed clock could push past a live lease."""
    for method in (JournalStore.claim, JournalStore.renew):
        assert "now" not in inspect.signature(method).parameters, method.__qualname__


async def test_an_expired_lease_is_claimable_and_counts_an_attempt(store: Store) -> None:
    await create(store, "r1")
    assert await claim(store, "A", lease=0.05) == ["r1"]
    await until_store_time(store, await store.now() + 0.05)
    assert await claim(store, "B") == ["r1"]
    run = await store.get_run("r1")
    assert run is not None and (run.lease_owner, run.attempts) == ("B", 2)


async def test_a_resumed_claim_says_so(store: Store) -> None:
    await create(store, "r1")
    first = await store.claim("A", 0.05, 10, ["wf"])
    assert [c.resumed for c in first] == [False]
    await until_store_time(store, await store.now() + 0.05)
    again = await store.claim("B", LEASE, 10, ["wf"])
    assert [(c.run.id, c.resumed) for c in again] == [("r1", True)]


async def test_renew_returns_only_the_ids_still_held(store: Store) -> None:
    await claimed(store, "r1")
    await claimed(store, "r2", owner="B")
    assert await renew(store, "A", ["r1", "r2", "unknown"]) == {"r1"}
    assert await renew(store, "B", ["r1"]) == set()
    assert await renew(store, "A", []) == set()
    await finish(store, "r1", "A")
    assert await renew(store, "A", ["r1"]) == set()  # an ended run holds no lease


async def test_a_renewed_lease_outlives_its_first_term(store: Store) -> None:
    await create(store, "r1")
    assert await claim(store, "A", lease=0.05) == ["r1"]
    assert await renew(store, "A", ["r1"], lease=LEASE) == {"r1"}
    await until_store_time(store, await store.now() + 0.05)
    assert await claim(store, "B") == []


async def test_a_lost_lease_write_raises_and_writes_nothing(store: Store) -> None:
    await create(store, "r1")
    assert await claim(store, "A", lease=0.05) == ["r1"]
    await until_store_time(store, await store.now() + 0.05)
    assert await claim(store, "B") == ["r1"]
    with pytest.raises(LeaseLost, match="no longer owned"):
        await commit(store, "r1", "A", step("r1", "a#0"))
    with pytest.raises(LeaseLost):
        await finish(store, "r1", "A")
    assert await store.load_steps("r1") == []
    run = await store.get_run("r1")
    assert run is not None and (run.status, run.lease_owner) == (RunStatus.RUNNING, "B")
    await commit(store, "r1", "B", step("r1", "a#0"))
    assert [s.key for s in await store.load_steps("r1")] == ["a#0"]


async def test_writes_to_a_run_nobody_holds_raise_lease_lost(store: Store) -> None:
    await create(store, "pending")
    with pytest.raises(LeaseLost):
        await commit(store, "pending", "A", step("pending", "a#0"))
    with pytest.raises(LeaseLost):
        await commit(store, "missing", "A", step("missing", "a#0"))
    assert await store.load_steps("pending") == []


async def test_expire_owner_hands_its_runs_to_others_now(store: Store) -> None:
    await claimed(store, "r1")
    await claimed(store, "r2")
    assert await store.running_owners() == ["A"]
    assert await store.expire_owner("A") == 2
    assert sorted(await claim(store, "B")) == ["r1", "r2"]
    assert await store.running_owners() == ["B"]
    assert await store.expire_owner("nobody") == 0


async def test_release_returns_a_run_to_the_queue_with_its_entries(store: Store) -> None:
    await claimed(store)
    await release(store, "r1", "B", [step("r1", "x#0")])  # not its owner: nothing happens
    assert await status(store, "r1") is RunStatus.RUNNING
    assert await store.load_steps("r1") == []
    await release(store, "r1", "A", [step("r1", "a#0", 0, b"2")])
    run = await store.get_run("r1")
    assert run is not None and (run.status, run.lease_owner) == (RunStatus.PENDING, None)
    assert [s.output for s in await store.load_steps("r1")] == [2]
    assert await claim(store, "B") == ["r1"]


async def test_workers_beat_list_and_leave(store: Store) -> None:
    now = await store.now()

    def beat(owner: str, seen: float) -> WorkerBeat:
        return WorkerBeat(owner, "host", 1, ("wf",), now - 100, seen, 1.0)

    await store.worker_beat(beat("old", now - 50))
    await store.worker_beat(beat("new", now))
    assert [w.owner for w in await store.list_workers()] == ["new", "old"]
    await store.worker_beat(beat("old", now + 1))  # a beat refreshes, never duplicates
    assert [w.owner for w in await store.list_workers()] == ["old", "new"]
    await store.worker_beat(beat("new", now + 2), forget_before=now + 0.5)
    assert [w.owner for w in await store.list_workers()] == ["new", "old"]
    await store.worker_beat(beat("x", now + 3), forget_before=now + 1.5)
    assert [w.owner for w in await store.list_workers()] == ["x", "new"]
    await store.remove_worker("x")
    assert [w.owner for w in await store.list_workers()] == ["new"]


async def test_a_write_to_a_cancelled_run_raises_and_writes_nothing(store: Store) -> None:
    await claimed(store, "r1")
    await cancel(store, "r1")
    with pytest.raises(LeaseLost, match="CANCELLED"):
        await commit(store, "r1", "A", step("r1", "a#0"))
    assert await store.load_steps("r1") == []


async def test_a_write_racing_a_takeover_lands_before_it_or_not_at_all(
    store: Store, store_url: str
) -> None:
    """The lease check and the write are one: a write that returns landed before the new
    owner took the run (the new owner's first read sees it); one refused left nothing."""
    from keel.store import open_store

    ids = [f"r{i}" for i in range(20)]
    for run_id in ids:
        await create(store, run_id)
    assert sorted(await claim(store, "A", lease=0.05, limit=len(ids))) == sorted(ids)
    await until_store_time(store, await store.now() + 0.05)
    other = open_store(store_url)  # the new owner: its own connections

    async def old_owner(run_id: str) -> bool:
        try:
            await commit(store, run_id, "A", step(run_id, "a#0"))
        except LeaseLost:
            return False
        return True

    async def new_owner(run_id: str) -> list[str]:
        # A claim skips a row a write in flight holds locked (SKIP LOCKED): claim again.
        for _ in range(1000):
            if await claim(other, "B", ids=[run_id]) == [run_id]:
                return [s.key for s in await other.load_steps(run_id)]
            await asyncio.sleep(0.001)
        raise AssertionError(f"B never claimed {run_id}")

    try:
        outcomes = await asyncio.gather(*(asyncio.gather(old_owner(r), new_owner(r)) for r in ids))
        for run_id, (landed, seen) in zip(ids, outcomes, strict=True):
            assert seen == (["a#0"] if landed else []), run_id
            assert [s.key for s in await store.load_steps(run_id)] == seen, run_id
    finally:
        await other.close()
