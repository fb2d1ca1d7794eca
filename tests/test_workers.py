"""Worker processes: racing for runs, suspended runs holding no memory, graceful stop."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from keel.types import StepKind, StepRecord, StepStatus
from tests.apps.crash_app import BALLAST_BYTES, step_value
from tests.apps.harness import Harness
from tests.limits import WAIT


def _count(steps: list[StepRecord], kind: StepKind, status: StepStatus) -> int:
    return sum(1 for s in steps if s.kind is kind and s.status is status)

pytestmark = pytest.mark.slow

RACE_RUNS = 50
RACE_STEPS = 4


async def test_two_workers_racing_execute_every_step_exactly_once(worker_harness):
    h: Harness = worker_harness
    h.base_env["KEEL_LEASE_SECONDS"] = "30"  # no lease may expire here: both workers live
    app = h.app()
    # Small per-worker concurrency, so neither worker can claim every run in one go.
    workers = [h.spawn(KEEL_CONCURRENCY=4), h.spawn(KEEL_CONCURRENCY=4)]
    for w in workers:
        await h.wait_ready(w)

    ids = [f"race-{k:02d}" for k in range(RACE_RUNS)]
    for k, run_id in enumerate(ids):
        await app.start("short", {"k": k, "n": RACE_STEPS}, id=run_id, execute=False)

    await h.wait_until(
        lambda: h.status_counts().get("SUCCEEDED", 0) == RACE_RUNS,
        timeout=90,
        what=f"{RACE_RUNS} runs to succeed",
        procs=workers,
    )
    assert h.status_counts() == {"SUCCEEDED": RACE_RUNS}

    expected = {f"{r}:work#{i}" for r in ids for i in range(RACE_STEPS)}
    log = h.executions()
    counts = Counter(k for k, _ in log)
    assert set(counts) == expected
    dupes = {k: c for k, c in counts.items() if c > 1}
    assert not dupes, f"steps executed more than once: {dupes}"
    assert len(log) == RACE_RUNS * RACE_STEPS
    assert h.effects() == sorted(expected)
    assert h.effect_dupes() == []

    by_run: dict[str, set[int]] = {}
    for key, pid in log:
        by_run.setdefault(key.split(":", 1)[0], set()).add(pid)
    # Each run was executed by one worker only, and both workers got runs.
    assert all(len(pids) == 1 for pids in by_run.values()), by_run
    assert {pid for pids in by_run.values() for pid in pids} == {w.pid for w in workers}

    step_total = sum(step_value(i, 10) for i in range(RACE_STEPS))
    for k, run_id in enumerate(ids):
        info = await app.get_run(run_id)
        assert info.result == step_total + k
        assert info.attempts == 1, f"{run_id} was claimed {info.attempts} times"
        journal = await app.steps(run_id)
        assert [s.key for s in journal] == [f"work#{i}" for i in range(RACE_STEPS)]

    for w in workers:
        assert h.terminate(w) == 0, w.stderr()


SUSPEND_FIRST = 200
SUSPEND_TOTAL = 2000
MAX_GROWTH_PER_RUN = 20 * 1024  # each run holds a 64 KiB ballast across its wait


async def test_suspended_runs_hold_no_memory_in_the_worker(worker_harness):
    h: Harness = worker_harness
    h.base_env["KEEL_LEASE_SECONDS"] = "30"
    app = h.app()
    worker = h.spawn(KEEL_CONCURRENCY=100)
    await h.wait_ready(worker)

    async def start(lo: int, hi: int) -> None:
        for n in range(lo, hi):
            await app.start("hold", {"n": n}, id=f"hold-{n:04d}", execute=False)

    async def all_waiting(count: int) -> None:
        await h.wait_until(
            lambda: h.status_counts().get("WAITING", 0) == count,
            timeout=120,
            what=f"{count} runs WAITING",
            procs=[worker],
            interval=0.05,
        )
        assert h.status_counts() == {"WAITING": count}

    await start(0, SUSPEND_FIRST)
    await all_waiting(SUSPEND_FIRST)
    await h.collect(worker)
    rss_first = h.rss(worker)

    await start(SUSPEND_FIRST, SUSPEND_TOTAL)
    await all_waiting(SUSPEND_TOTAL)
    await h.collect(worker)
    rss_all = h.rss(worker)

    growth = (rss_all - rss_first) / (SUSPEND_TOTAL - SUSPEND_FIRST)
    assert growth < MAX_GROWTH_PER_RUN, (
        f"worker RSS grew {growth / 1024:.1f} KiB per additional WAITING run "
        f"({rss_first / 2**20:.1f} MiB -> {rss_all / 2**20:.1f} MiB); a suspended run "
        f"must hold no coroutine (each would keep a {BALLAST_BYTES // 1024} KiB ballast)"
    )
    # Every run is parked durably: one pending signal step, no lease.
    steps = h.all_steps()
    assert _count(steps, StepKind.SIGNAL, StepStatus.PENDING) == SUSPEND_TOTAL
    assert [r.id for r in h.runs() if r.lease_owner is not None] == []

    for n in range(SUSPEND_TOTAL):
        await app.signal(f"hold-{n:04d}", "go", n)
    await h.wait_until(
        lambda: h.status_counts().get("SUCCEEDED", 0) == SUSPEND_TOTAL,
        timeout=120,
        what=f"{SUSPEND_TOTAL} runs to succeed",
        procs=[worker],
        interval=0.05,
    )
    assert h.status_counts() == {"SUCCEEDED": SUSPEND_TOTAL}
    results = {r.id: r.result for r in h.runs()}
    assert all(results[f"hold-{n:04d}"] == 2 * n + BALLAST_BYTES for n in range(SUSPEND_TOTAL))
    assert _count(h.all_steps(), StepKind.SIGNAL, StepStatus.OK) == SUSPEND_TOTAL


async def test_sigterm_hands_a_running_run_back_to_the_queue(worker_harness):
    """`Worker.stop()` (what cancelling `serve()` does): no drain, the step in flight is
    interrupted and runs again. `keel worker` drains first: tests/test_worker_drain.py."""
    h: Harness = worker_harness
    h.base_env["KEEL_LEASE_SECONDS"] = "30"  # PENDING must come from the hand-back, not expiry
    app = h.app()
    run_id = "stop-1"
    await app.start("stoppable", {}, id=run_id, execute=False)

    first = h.spawn(KEEL_TEST_BLOCK=120)  # block#0 stays in flight until stopped
    await h.wait_until(
        lambda: (f"{run_id}:block#0", first.pid) in h.executions(),
        timeout=WAIT,
        what="block#0 to be in flight",
        procs=[first],
    )
    running = await app.get_run(run_id)
    assert running.status.value == "RUNNING"
    assert running.lease_owner is not None and f":{first.pid}:" in running.lease_owner

    assert h.terminate(first) == 0, first.stderr()
    stopped = await app.get_run(run_id)
    assert stopped.status.value == "PENDING"
    assert stopped.lease_owner is None
    journal = await app.steps(run_id)
    # The finished step stays journaled; the interrupted one left no record.
    assert [(s.key, s.status.value) for s in journal] == [("work#0", "ok")]
    assert h.effects() == [f"{run_id}:work#0"]

    second = h.spawn(KEEL_TEST_BLOCK=0)
    info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT, procs=[second])
    assert info.result == [step_value(0, 2), 1, step_value(2, 2)]
    assert info.attempts == 2
    # Only the step in flight at the stop ran again.
    assert h.executions() == [
        (f"{run_id}:work#0", first.pid),
        (f"{run_id}:block#0", first.pid),
        (f"{run_id}:block#0", second.pid),
        (f"{run_id}:work#1", second.pid),
    ]
    assert h.effects() == sorted(f"{run_id}:{k}" for k in ("work#0", "block#0", "work#1"))
    journal = await app.steps(run_id)
    assert [(s.key, s.status.value) for s in journal] == [
        ("work#0", "ok"),
        ("block#0", "ok"),
        ("work#1", "ok"),
    ]
    assert h.terminate(second) == 0, second.stderr()


async def test_sigterm_on_an_idle_worker_exits_cleanly(worker_harness):
    h: Harness = worker_harness
    worker = h.spawn()
    await h.wait_ready(worker)
    assert h.terminate(worker) == 0, worker.stderr()
    assert worker.stderr() == ""


async def test_cancelling_serve_hands_a_running_run_back(worker_harness, monkeypatch):
    """The same hand-back in-process: cancel the task running `Worker.serve()`."""
    h: Harness = worker_harness
    monkeypatch.setenv("KEEL_TEST_DIR", str(h.data))
    monkeypatch.setenv("KEEL_TEST_BLOCK", "120")
    app = h.app()
    run_id = "cancel-1"
    await app.start("stoppable", {}, id=run_id, execute=False)

    serving = asyncio.ensure_future(app.worker().serve())
    try:
        await h.wait_until(
            lambda: any(k == f"{run_id}:block#0" for k, _ in h.executions()),
            timeout=WAIT,
            what="block#0 to be in flight",
        )
        assert (await app.get_run(run_id)).status.value == "RUNNING"
    finally:
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(serving, 30)

    stopped = await app.get_run(run_id)
    assert stopped.status.value == "PENDING"
    assert stopped.lease_owner is None
    assert [s.key for s in await app.steps(run_id)] == ["work#0"]

    monkeypatch.setenv("KEEL_TEST_BLOCK", "0")
    serving = asyncio.ensure_future(app.worker().serve())
    try:
        info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT)
    finally:
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(serving, 30)
    assert info.result == [step_value(0, 2), 1, step_value(2, 2)]
    assert [k for k, _ in h.executions()] == [
        f"{run_id}:work#0",
        f"{run_id}:block#0",
        f"{run_id}:block#0",
        f"{run_id}:work#1",
    ]


async def test_stop_hands_back_runs_claimed_but_not_yet_started(worker_harness):
    """White-box: `stop()` right after a claim, before the run's task got to run once.

    Such a task is cancelled before RunExecution can hand the run back itself, so the
    worker must release it, or it stays RUNNING under a stopped worker's lease.
    """
    h: Harness = worker_harness
    app = h.app()
    await app.start("short", {"k": 1}, id="claimed-1", execute=False)
    worker = app.worker()  # not started: its own poll loop would claim the run first
    try:
        assert await worker._claim(10) == 1  # its task is scheduled, not started
        assert (await app.get_run("claimed-1")).status.value == "RUNNING"
    finally:
        await worker.stop()
    info = await app.get_run("claimed-1")
    assert info.status.value == "PENDING"
    assert info.lease_owner is None
    assert worker.active == {}
    assert h.executions() == []


async def test_stop_hands_back_a_run_cancelled_while_it_waited_on_the_store(
    worker_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """White-box: `stop()` while the run's first store call is still out (on a network
    store it answers later). The cancel lands before RunExecution's own hand-back, so
    the worker must release the run itself, or it stays RUNNING under its lease."""
    h: Harness = worker_harness
    app = h.app()
    await app.start("short", {"k": 1}, id="loading-1", execute=False)
    entered, never = asyncio.Event(), asyncio.Event()

    async def slow_load(run_id: str) -> list[StepRecord]:
        entered.set()
        await never.wait()  # the answer never comes before the stop
        return []

    monkeypatch.setattr(app.store, "load_steps", slow_load)
    worker = app.worker()  # not started: its own poll loop would claim the run first
    try:
        assert await worker._claim(10) == 1
        await asyncio.wait_for(entered.wait(), WAIT)
    finally:
        await worker.stop()
    info = await app.get_run("loading-1")
    assert info.status.value == "PENDING" and info.lease_owner is None
    assert worker.active == {} and h.executions() == []
