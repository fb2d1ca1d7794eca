"""Unit of work conformance: a `commit` lands whole or not at all.

Its journal entries, their usage, the reviews and escalations it opens are one
transaction: a lost lease or a record the store cannot take leaves nothing behind, and
so does a process killed in the middle of one (SIGKILL, then every unit is checked).
Two processes creating and claiming the same runs never both get one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from keel.errors import LeaseLost
from keel.store import Store
from tests.limits import WAIT
from tests.store.kit import claim, claimed, commit, create, journal, step, usage
from tests.store.people_kit import escalation, review
from tests.store.writer_proc import STEPS

_PROC = str(Path(__file__).with_name("writer_proc.py"))


async def _nothing_of(store: Store, run_id: str) -> None:
    assert await store.load_steps(run_id) == []
    assert await store.get_review("rv1") is None
    assert await store.get_escalation("es1") is None
    assert await store.spent(run_id=run_id) == 0


async def test_a_unit_lands_whole_and_says_what_it_opened(store: Store) -> None:
    await claimed(store)
    done = await commit(
        store,
        "r1",
        "A",
        step("r1", "llm#0", 0, usage=usage(0.5)),
        step("r1", "b#0", 1),
        reviews=[review("rv1", "r1")],
        escalations=[escalation("es1", "r1")],
    )
    assert done.opened == frozenset({"rv1", "es1"})
    assert [s.key for s in await journal(store, "r1")] == ["llm#0", "b#0"]
    assert await store.spent(run_id="r1") == pytest.approx(0.5)
    got = await store.get_review("rv1")
    assert got is not None and got.status == "pending"
    esc = await store.get_escalation("es1")
    assert esc is not None and esc.status == "open"
    # idempotent: the same requests again open nothing new
    again = await commit(
        store, "r1", "A", reviews=[review("rv1", "r1")], escalations=[escalation("es1", "r1")]
    )
    assert again.opened == frozenset()


async def test_an_empty_unit_commits_nothing(store: Store) -> None:
    await claimed(store)
    assert (await commit(store, "r1", "A")).opened == frozenset()
    assert await store.load_steps("r1") == []


async def test_a_unit_without_an_owner_skips_the_lease_check(store: Store) -> None:
    await create(store, "r1")  # nobody holds it (a sample review of an ended run, say)
    done = await commit(store, "r1", None, reviews=[review("rv1", "r1", kind="sample")])
    assert done.opened == frozenset({"rv1"})


async def test_a_unit_with_a_lost_lease_leaves_nothing(store: Store) -> None:
    await claimed(store, owner="B")
    with pytest.raises(LeaseLost):
        await commit(
            store,
            "r1",
            "A",
            step("r1", "llm#0", usage=usage(0.5)),
            reviews=[review("rv1", "r1")],
            escalations=[escalation("es1", "r1")],
        )
    await _nothing_of(store, "r1")


async def test_a_unit_whose_last_part_fails_leaves_nothing(store: Store) -> None:
    await claimed(store)
    # JSON cannot hold this packet's input, so writing the escalation fails, after the
    # steps, their usage and the review were written in the same transaction.
    bad = escalation("es1", "r1", input=object())
    with pytest.raises(Exception):  # noqa: B017 - whichever error the backend raises
        await commit(
            store,
            "r1",
            "A",
            step("r1", "llm#0", 0, usage=usage(0.5)),
            step("r1", "b#0", 1),
            reviews=[review("rv1", "r1")],
            escalations=[bad],
        )
    await _nothing_of(store, "r1")
    await commit(store, "r1", "A", step("r1", "b#0", 1))  # the store is fine afterwards
    assert [s.key for s in await store.load_steps("r1")] == ["b#0"]


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return await asyncio.create_subprocess_exec(
        sys.executable, _PROC, *args, stdout=asyncio.subprocess.PIPE, env=env
    )


@pytest.mark.slow
async def test_a_kill_in_the_middle_leaves_every_unit_whole_or_absent(
    store: Store, store_url: str
) -> None:
    proc = await _spawn("commit", store_url)
    assert proc.stdout is not None
    last = -1
    try:
        while last < 5:  # let several units land, then kill it while it writes more
            line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
            assert line, "the writer exited before it was killed"
            last = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    steps = await store.load_steps("crash")
    units: dict[int, int] = {}
    for s in steps:
        unit = int(s.key.split("-")[0][1:])
        units[unit] = units.get(unit, 0) + 1
    assert set(range(last + 1)) <= set(units), "a unit reported committed is missing"
    assert all(n == STEPS for n in units.values()), f"a unit landed in part: {units}"
    assert sorted(units) == list(range(len(units))), "units landed out of order"
    for unit in range(len(units) + 1):
        assert (await store.get_review(f"u{unit}") is not None) == (unit in units)


@pytest.mark.slow
async def test_two_processes_never_claim_the_same_run(store_url: str) -> None:
    n = 60
    procs = [await _spawn("race", store_url, str(n)) for _ in range(2)]
    outs = []
    for proc in procs:
        out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
        assert proc.returncode == 0
        outs.append(json.loads(out))
    created = [set(o["created"]) for o in outs]
    claimed_ids = [o["claimed"] for o in outs]
    everything = {f"r{i}" for i in range(n)}
    assert not created[0] & created[1], "a run was created twice"
    assert created[0] | created[1] == everything
    assert all(len(c) == len(set(c)) for c in claimed_ids), "a process claimed a run twice"
    assert not set(claimed_ids[0]) & set(claimed_ids[1]), "a run was claimed by both"
    assert set(claimed_ids[0]) | set(claimed_ids[1]) == everything


async def test_two_store_objects_share_one_queue(store: Store, store_url: str) -> None:
    from keel.store import open_store

    other = open_store(store_url)
    try:
        for i in range(6):
            await create(store if i % 2 else other, f"r{i}")
        a, b = await asyncio.gather(claim(store, "A", limit=4), claim(other, "B", limit=4))
        assert not set(a) & set(b)
        assert sorted(a + b) == [f"r{i}" for i in range(6)]
    finally:
        await other.close()
