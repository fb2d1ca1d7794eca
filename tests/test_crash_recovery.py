"""SIGKILL a worker subprocess at seeded random points; the run must still finish exactly once.

Every tool execution appends `<run_id>:<step key> <pid>` to an execution log and
creates an effect file named by `keel.current_step().idempotency_key` (O_EXCL),
see tests/apps/effects.py. After each kill the harness snapshots which steps were
journaled, so the tests can check the core promise directly: a step journaled
before a crash is never executed again; only steps in flight at a kill may rerun.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

import keel
from tests.apps.crash_app import delays, step_value
from tests.apps.harness import Harness, Kill
from tests.limits import WAIT

pytestmark = pytest.mark.slow

N_STEPS = 20
SEQ_SEEDS = range(10)  # 2 or 3 kills each: 25 kill points
MAP_ITEMS = 200
MAP_CONCURRENCY = 20
MAP_SEEDS = range(4)  # 2 or 3 kills each: 10 kill points


def _kill_plan(seed: int, low: int, high: int) -> tuple[random.Random, list[int]]:
    """2-3 kill targets: 'kill once this many distinct steps have started'."""
    rng = random.Random(seed)
    kills = 2 + seed % 2
    return rng, sorted(rng.sample(range(low, high), kills))


async def _crash_loop(
    h: Harness,
    app: keel.App,
    run_id: str,
    targets: list[int],
    rng: random.Random,
) -> tuple[list[Kill], keel.RunInfo]:
    """For each target: start a worker, let it start `target` distinct steps, wait a
    seeded 0-12 ms more (mid-step or mid-commit), SIGKILL it. Then let a last worker
    finish the run."""
    kills: list[Kill] = []

    def ready_to_kill(target: int, pid: int) -> bool:
        log = h.executions()
        started = len({k for k, _ in log})
        # ... and this worker has executed something itself, so no kill is wasted
        # on a worker that had not even claimed the run yet.
        return started >= target and any(p == pid for _, p in log)

    for target in targets:
        proc = h.spawn()
        await h.wait_until(
            lambda t=target, pid=proc.pid: ready_to_kill(t, pid),
            timeout=WAIT,
            what=f"{target} steps of {run_id} to start",
            procs=[proc],
        )
        await asyncio.sleep(rng.uniform(0, 0.012))
        kills.append(await h.kill(proc, app, run_id))
    # The kills hit a live run (not one that had already finished).
    assert any(not k.run_finished for k in kills), kills
    final = h.spawn()
    info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=90, procs=[final])
    return kills, info


def _assert_exactly_once(
    h: Harness,
    expected: set[str],
    kills: list[Kill],
    reruns_per_kill: int,
) -> None:
    log = h.executions()
    counts = Counter(k for k, _ in log)
    # Nothing ran that the workflow did not ask for, and every step ran.
    assert set(counts) == expected, set(counts) ^ expected
    reruns = sum(counts.values()) - len(expected)
    assert reruns <= len(kills) * reruns_per_kill, (reruns, len(kills), counts.most_common(5))
    assert max(counts.values()) <= 1 + len(kills), counts.most_common(3)

    # A step journaled before a kill never executes again afterwards.
    for n, kill in enumerate(kills):
        after = {k for k, _ in log[kill.log_len :]}
        rerun_journaled = sorted(kill.journaled & after)
        assert not rerun_journaled, (
            f"kill #{n + 1}: steps journaled before the worker died executed again: "
            f"{rerun_journaled[:5]}"
        )

    # Every effect happened exactly once (one file per idempotency key, none extra).
    effects = h.effects()
    assert effects == sorted(expected), set(effects) ^ expected
    # An effect is only re-attempted when its step was in flight at a kill.
    dupes = Counter(h.effect_dupes())
    assert sum(dupes.values()) <= len(kills) * reruns_per_kill, dupes
    assert set(dupes) <= {k for k, c in counts.items() if c > 1}, dupes


@pytest.mark.parametrize("seed", SEQ_SEEDS)
async def test_sigkill_sequential_workflow_finishes_exactly_once(worker_harness, seed):
    h: Harness = worker_harness
    app = h.app()
    run_id = f"seq-{seed}"
    await app.start("steps", {"seed": seed, "n": N_STEPS}, id=run_id, execute=False)
    rng, targets = _kill_plan(seed, 1, N_STEPS - 2)

    kills, info = await _crash_loop(h, app, run_id, targets, rng)

    ms = delays(seed, N_STEPS)
    assert info.status.value == "SUCCEEDED"
    assert info.result == [step_value(i, d) for i, d in enumerate(ms)]
    # Killed mid-run, then resumed: the run was claimed once per worker that ran it.
    assert info.attempts >= 2

    journal = await app.steps(run_id)
    tools = [s for s in journal if s.kind.value == "tool"]
    assert [s.key for s in tools] == [f"work#{i}" for i in range(N_STEPS)]
    assert all(s.status.value == "ok" for s in tools), [s for s in tools if s.status.value != "ok"]
    assert [s.output for s in tools] == info.result

    expected = {f"{run_id}:work#{i}" for i in range(N_STEPS)}
    # Sequential: at most the one step in flight can rerun per kill.
    _assert_exactly_once(h, expected, kills, reruns_per_kill=1)


@pytest.mark.parametrize("seed", MAP_SEEDS)
async def test_sigkill_during_map_finishes_every_item_exactly_once(worker_harness, seed):
    h: Harness = worker_harness
    app = h.app()
    run_id = f"map-{seed}"
    await app.start(
        "fanout",
        {"seed": seed, "n": MAP_ITEMS, "concurrency": MAP_CONCURRENCY},
        id=run_id,
        execute=False,
    )
    rng, targets = _kill_plan(1000 + seed, MAP_CONCURRENCY, MAP_ITEMS - MAP_CONCURRENCY)

    kills, info = await _crash_loop(h, app, run_id, targets, rng)

    ms = delays(seed, MAP_ITEMS)
    assert info.status.value == "SUCCEEDED"
    assert info.result == [step_value(i, d) for i, d in enumerate(ms)]

    journal = await app.steps(run_id)
    tools = [s for s in journal if s.kind.value == "tool"]
    maps = [s for s in journal if s.kind.value == "map"]
    assert len(maps) == 1 and maps[0].status.value == "ok"
    assert sorted(s.key for s in tools) == sorted(f"map:item#0/{i}" for i in range(MAP_ITEMS))
    assert all(s.status.value == "ok" for s in tools)
    by_index = {int(s.key.rsplit("/", 1)[1]): s.output for s in tools}
    assert [by_index[i] for i in range(MAP_ITEMS)] == info.result

    # Items journaled before a kill (ended_at earlier than the kill) are never rerun.
    log = h.executions()
    for kill in kills:
        after = Counter(k for k, _ in log[kill.log_len :])
        done_before = [s for s in tools if s.ended_at is not None and s.ended_at < kill.at]
        assert not [s.key for s in done_before if after[f"{run_id}:{s.key}"]]

    expected = {f"{run_id}:map:item#0/{i}" for i in range(MAP_ITEMS)}
    # At most the items in flight at a kill (<= concurrency) can rerun.
    _assert_exactly_once(h, expected, kills, reruns_per_kill=MAP_CONCURRENCY)


@pytest.mark.parametrize("restart", ["before_deadline", "after_deadline"])
async def test_durable_timer_fires_after_worker_restart(worker_harness, restart):
    h: Harness = worker_harness
    h.base_env["KEEL_INLINE_SLEEP_MAX"] = "0.5"  # a 3 s sleep suspends the run
    app = h.app()
    run_id = f"nap-{restart}"
    await app.start("nap", {"seconds": 3.0}, id=run_id, execute=False)

    first = h.spawn()
    waiting = await h.wait_status(app, run_id, "WAITING", timeout=WAIT, procs=[first])
    assert waiting.wake_at is not None
    assert waiting.lease_owner is None
    wake_at = waiting.wake_at
    journal = await app.steps(run_id)
    sleeps = [s for s in journal if s.kind.value == "sleep"]
    assert len(sleeps) == 1 and sleeps[0].status.value == "pending"
    assert sleeps[0].wake_at == wake_at
    assert wake_at >= sleeps[0].started_at + 3.0 - 1e-6

    await h.kill(first, app)
    if restart == "after_deadline":
        await h.wait_until(
            lambda: time.time() > wake_at + 0.3, timeout=WAIT, what="the deadline to pass"
        )
        # Nobody ran it while no worker was alive.
        assert (await app.get_run(run_id)).status.value == "WAITING"
    second = h.spawn()
    info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT, procs=[second])

    assert info.result == [step_value(0, 2), step_value(1, 2)]
    assert info.ended_at is not None and info.ended_at >= wake_at
    journal = await app.steps(run_id)
    sleeps = [s for s in journal if s.kind.value == "sleep"]
    assert len(sleeps) == 1, sleeps
    assert sleeps[0].status.value == "ok" and sleeps[0].wake_at == wake_at
    assert [s.key for s in journal if s.kind.value == "tool"] == ["work#0", "work#1"]

    # The step before the sleep ran once, in the first worker; the one after ran once,
    # in the second worker, after the deadline.
    log = h.executions()
    assert log == [(f"{run_id}:work#0", first.pid), (f"{run_id}:work#1", second.pid)]
    after = next(s for s in journal if s.key == "work#1")
    assert after.started_at >= wake_at
    assert h.effects() == [f"{run_id}:work#0", f"{run_id}:work#1"]


@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
async def test_killed_worker_is_recovered_by_dead_pid_not_lease_expiry(worker_harness, reap):
    """With a lease far longer than the test, only dead-pid detection can recover the run;
    a worker killed but not yet reaped by its parent (a zombie) is dead too."""
    h: Harness = worker_harness
    h.base_env["KEEL_LEASE_SECONDS"] = "600"
    app = h.app()
    run_id = f"pid-{'reaped' if reap else 'zombie'}"
    await app.start("steps", {"seed": 7, "n": N_STEPS}, id=run_id, execute=False)

    first = h.spawn()
    await h.wait_until(
        lambda: len(h.executions()) >= 5, timeout=WAIT, what="5 steps", procs=[first]
    )
    kill = await h.kill(first, app, run_id, reap=reap)
    assert not kill.run_finished
    orphan = await app.get_run(run_id)
    assert orphan.status.value == "RUNNING" and f":{first.pid}:" in (orphan.lease_owner or "")

    second = h.spawn()
    # Far inside the 600 s lease: the new worker saw the owner's process is gone.
    info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT, procs=[second])
    assert info.result == [step_value(i, d) for i, d in enumerate(delays(7, N_STEPS))]
    expected = {f"{run_id}:work#{i}" for i in range(N_STEPS)}
    _assert_exactly_once(h, expected, [kill], reruns_per_kill=1)


async def test_surviving_worker_takes_over_a_killed_workers_runs(worker_harness):
    """Two workers share the queue; one is SIGKILLed mid-run. The survivor's periodic
    dead-worker check (not lease expiry: the lease is 600 s) recovers its runs."""
    h: Harness = worker_harness
    h.base_env["KEEL_LEASE_SECONDS"] = "600"
    app = h.app()
    victim, survivor = h.spawn(KEEL_CONCURRENCY=5), h.spawn(KEEL_CONCURRENCY=5)
    for w in (victim, survivor):
        await h.wait_ready(w)
    ids = [f"share-{k}" for k in range(10)]
    for k, run_id in enumerate(ids):
        await app.start("steps", {"seed": 100 + k, "n": N_STEPS}, id=run_id, execute=False)

    await h.wait_until(
        lambda: sum(p == victim.pid for _, p in h.executions()) >= 10,
        timeout=WAIT,
        what="the victim to execute 10 steps",
        procs=[victim, survivor],
    )
    kill = await h.kill(victim, app)
    orphans = sum(
        1
        for r in h.runs()
        if r.status is keel.RunStatus.RUNNING and f":{victim.pid}:" in (r.lease_owner or "")
    )
    assert orphans >= 1, "the victim held no run when it was killed"

    await h.wait_until(
        lambda: h.status_counts() == {"SUCCEEDED": len(ids)},
        timeout=WAIT,
        what="every run to succeed on the survivor",
        procs=[survivor],
    )
    for k, run_id in enumerate(ids):
        info = await app.get_run(run_id)
        assert info.result == [step_value(i, d) for i, d in enumerate(delays(100 + k, N_STEPS))]
    expected = {f"{r}:work#{i}" for r in ids for i in range(N_STEPS)}
    # One step in flight per run the victim held: at most its concurrency rerun.
    _assert_exactly_once(h, expected, [kill], reruns_per_kill=5)
    late = {p for _, p in h.executions()[kill.log_len :]}
    assert late == {survivor.pid}


async def test_heartbeat_keeps_a_step_longer_than_the_lease(worker_harness):
    """A step that outlives the lease several times over is not taken over by another
    live worker: the owner's heartbeat renews the lease."""
    h: Harness = worker_harness
    h.base_env["KEEL_LEASE_SECONDS"] = "1.5"
    app = h.app()
    run_id = "long-1"
    first = h.spawn(KEEL_TEST_BLOCK=5)
    await h.wait_ready(first)
    await app.start("stoppable", {}, id=run_id, execute=False)
    await h.wait_until(
        lambda: (f"{run_id}:block#0", first.pid) in h.executions(),
        timeout=WAIT,
        what="block#0 to start",
        procs=[first],
    )
    second = h.spawn(KEEL_TEST_BLOCK=5)  # polling the same store the whole time
    await h.wait_ready(second)
    info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT, procs=[first, second])
    assert info.attempts == 1
    assert h.executions() == [
        (f"{run_id}:work#0", first.pid),
        (f"{run_id}:block#0", first.pid),
        (f"{run_id}:work#1", first.pid),
    ]
