"""SIGKILL a worker after ctx.memory steps were journaled: the resumed run gets the
first attempt's search hits although memories were added and forgotten since, and its
writes (add_many, supersede) happened exactly once. Derived ids make a write
re-executed after a crash idempotent; the same ids written twice store one row.

The app is tests/apps/memory_app.py.
"""

from __future__ import annotations

import pytest

import keel
from tests.apps.harness import Harness
from tests.apps.memory_app import NS
from tests.limits import WAIT

MODULE = "tests.apps.memory_app"


def holds(h: Harness) -> list[int]:
    try:
        return [int(line.split()[1]) for line in (h.data / "memory.log").read_text().splitlines()]
    except FileNotFoundError:
        return []


async def _texts(app: keel.App) -> list[str]:
    return [r.text for r in await app.memory.list(namespace=NS, current=False, limit=1000)]


async def test_resume_replays_journaled_hits_and_writes_once(worker_harness: Harness) -> None:
    h = worker_harness
    app = h.app(MODULE)
    tea = await app.memory.add("Ada prefers green tea", namespace=NS)
    handle = await app.start("recall", {"old_id": tea}, id="mem-run", execute=False)

    proc = h.spawn(MODULE, KEEL_TEST_BLOCK=120)
    await h.wait_until(
        lambda: proc.pid in holds(h), timeout=WAIT, what="the hold step", procs=[proc]
    )
    kill = await h.kill(proc, app, handle.id)
    assert not kill.run_finished
    assert {f"{handle.id}:memory.search#0", f"{handle.id}:memory.add_many#0"} <= kill.journaled

    # the world changes while the run is down
    await app.memory.add("Ada loves green tea with jasmine, green tea every day", namespace=NS)
    first_hits = [s for s in await app.steps(handle.id) if s.key == "memory.search#0"]
    await app.memory.forget(tea)

    final = h.spawn(MODULE)
    info = await h.wait_status(app, handle.id, "SUCCEEDED", timeout=WAIT, procs=[final])
    result = info.result
    assert [hit[1] for hit in result["hits"]] == ["Ada prefers green tea"]  # as first seen
    assert result["hits"] == [
        [d["id"], d["text"], d["score"], d["digest"]] for d in first_hits[0].output
    ]
    assert result["again"][0].startswith("Ada loves green tea")  # a new search sees now
    texts = await _texts(app)
    assert texts.count("run fact one") == 1 and texts.count("run fact two") == 1
    assert texts.count("Ada now drinks coffee") == 1
    assert "Ada prefers green tea" not in texts  # forgotten: gone, closed or not
    assert holds(h) == [proc.pid, final.pid]


async def test_a_write_with_the_same_derived_ids_stores_one_row(worker_harness: Harness) -> None:
    app = worker_harness.app(MODULE)
    mem = app.memory
    for _ in range(2):  # as a crash between the insert and its journal entry would
        await mem._write(["once only"], NS, ["mem_fixed"], source="run:x")
    assert (await _texts(app)).count("once only") == 1


@pytest.mark.parametrize("die_after", [1, 2, 3], ids=["add", "add_many", "supersede"])
async def test_a_write_done_but_not_journaled_when_killed_is_not_made_twice(
    worker_harness: Harness, die_after: int
) -> None:
    h = worker_harness
    app = h.app(MODULE)
    old = await app.memory.add("the fact superseded", namespace=NS)
    handle = await app.start("writes", {"old_id": old}, id="w-run", execute=False)

    doomed = h.spawn(MODULE, KEEL_TEST_DIE_AFTER_WRITE=die_after)
    await h.wait_until(lambda: not doomed.alive(), timeout=WAIT, what="the kill after a write")
    log = (h.data / "memory.log").read_text()
    assert f"written {doomed.pid}" in log  # it died right after the write committed
    journaled = {s.name for s in h.steps(handle.id) if s.status.value == "ok"}
    assert len(journaled) == die_after - 1  # ... and before its step was journaled

    final = h.spawn(MODULE)
    out = await handle.result(WAIT)
    texts = await _texts(app)
    for text in (
        "written once: add",
        "written once: a",
        "written once: b",
        "written once: superseding",
    ):
        assert texts.count(text) == 1, (text, texts)
    ids = {r.id for r in await app.memory.list(namespace=NS, current=False, limit=100)}
    assert {out["add"], *out["add_many"], out["supersede"]} <= ids
    h.terminate(final)
