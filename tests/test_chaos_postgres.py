"""Chaos on Postgres: workers SIGKILLed every 0.5-2 s and replaced, and the database
crashed (kill -9) and restarted once in the middle; every run still finishes, and
effects repeat only within the in-flight bound.

200 runs of a 10-step chain plus a 20-item map (6,000 effects) on a Postgres server of
the test's own, served by 3 `keel worker` processes with `--max-steps` slots each. The
kill schedule is seeded (`KEEL_CHAOS_SEED`), so a failure can be replayed. Afterwards:
0 runs lost, 0 stuck, every run's result right, every effect done, duplicated effects
at most `max_steps` per kill (a SIGKILLed worker loses at most the steps it held slots
for) plus `max_steps` per worker for the database crash, and Postgres's own index check
(amcheck) passes. It prints the kills, the duplicates and the spread of work.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.apps.crash_app import delays, step_value
from tests.apps.harness import Harness, WorkerProc
from tests.limits import WAIT
from tests.services import postgres

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("KEEL_CHAOS_SEED", "14"))
RUNS = 200
CHAIN, ITEMS = 10, 20
WORKERS = 3
MAX_STEPS = 8
MAX_RUNS = 3  # per worker: 9 runs at once, so the work lasts long enough for chaos
SLOWER = 20  # step latencies 40-300 ms: about a minute of work on an idle machine
KILL_EVERY = (0.5, 2.0)  # seconds between SIGKILLs


@pytest.fixture
def server() -> Iterator[postgres.Server]:
    """A server of this test's own: it is restarted mid-test."""
    try:
        srv = postgres.start_server(durable=True)  # a commit survives the restart
    except postgres.Unavailable as exc:
        postgres.unavailable(str(exc))
        raise
    try:
        yield srv
    finally:
        postgres.stop_server(srv)


@pytest.fixture
async def chaos(tmp_path: Path, server: postgres.Server) -> AsyncIterator[Harness]:
    import psycopg

    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE chaos TEMPLATE template0")
    h = Harness(tmp_path, url=server.url("chaos"))
    try:
        yield h
    finally:
        await h.aclose()


def _result(seed: int) -> int:
    """What `chain_map` returns for `seed` (tests/apps/crash_app.py)."""
    chain = sum(step_value(i, ms * SLOWER) for i, ms in enumerate(delays(seed, CHAIN)))
    items = delays(seed + 1, ITEMS)
    return chain + sum(step_value(CHAIN + i, ms * SLOWER) for i, ms in enumerate(items))


def _spawn(h: Harness) -> WorkerProc:
    return h.spawn_keel("worker", "tests.apps.crash_app", "--max-steps", str(MAX_STEPS))


async def test_chaos_kills_and_a_database_restart_lose_nothing(
    chaos: Harness, server: postgres.Server, capsys: pytest.CaptureFixture[str]
) -> None:
    h = chaos
    rng = random.Random(SEED)
    app = h.app()
    ids = [f"chaos-{k:03d}" for k in range(RUNS)]
    for k, run_id in enumerate(ids):
        await app.start("chain_map", {"seed": k, "slower": SLOWER}, id=run_id, execute=False)

    workers = [_spawn(h) for _ in range(WORKERS)]
    kills: list[int] = []
    restarted_at: float | None = None
    started = time.monotonic()
    deadline = started + WAIT * 20  # a bound for a loaded machine, not a timing

    def done() -> int:
        counts = h.status_counts()
        assert set(counts) <= {"PENDING", "RUNNING", "SUCCEEDED"}, f"{counts}\n{h.diagnostics()}"
        return counts.get("SUCCEEDED", 0)

    while done() < RUNS:
        assert time.monotonic() < deadline, f"chaos did not finish\n{h.diagnostics()}"
        await asyncio.sleep(rng.uniform(*KILL_EVERY))
        if restarted_at is None and done() >= RUNS // 2:
            postgres.kill_server(server)  # a crash: kill -9 of the postmaster
            server = postgres.restart_server(server)
            restarted_at = time.monotonic() - started
            continue
        victim = workers.pop(rng.randrange(len(workers)))
        await h.kill(victim, app)
        kills.append(victim.pid)
        workers.append(_spawn(h))
    elapsed = time.monotonic() - started

    runs = h.runs()
    assert len(runs) == RUNS  # 0 lost
    counts = Counter(r.status.value for r in runs)
    assert counts == {"SUCCEEDED": RUNS}, counts  # 0 stuck, 0 failed
    for k, run_id in enumerate(ids):
        assert (await app.get_run(run_id)).result == _result(k), run_id
    effects = h.effects()
    assert len(effects) == RUNS * (CHAIN + ITEMS)  # every effect done, once
    dupes = h.effect_dupes()
    bound = (len(kills) + WORKERS) * MAX_STEPS
    spread = Counter(pid for _, pid in h.executions())
    spawned = [p.pid for p in h.procs]
    with capsys.disabled():  # the report shows in make test's output
        print(
            f"\nchaos seed {SEED}: {RUNS} runs in {elapsed:.0f} s, {len(kills)} SIGKILLs,"
            f" Postgres restarted at {restarted_at:.0f} s; duplicated effects {len(dupes)}"
            f" (bound {bound}); {len(spread)} of {len(spawned)} worker processes ran steps,"
            f" steps per process: {sorted(spread.values(), reverse=True)}"
        )
    assert restarted_at is not None
    assert len(dupes) <= bound, dupes
    # Replacements took the work over. How many started before their own SIGKILL depends
    # on the machine's load (at load 15, 17 of 37 did), so no share of them is required.
    assert len(spread) > WORKERS, spread
    _amcheck(server.url("chaos"))
    for w in workers:
        await h.wait_beat(w)  # serving (a worker spawned at the very end may still start)
        assert h.terminate(w) == 0, w.stderr()


def _amcheck(url: str) -> None:
    """Postgres's own structural check of every B-tree index of the store."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        indexes = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE a.amname = 'btree' AND n.nspname = 'public'"
        ).fetchall()
        assert indexes
        for (name,) in indexes:
            conn.execute("SELECT bt_index_check(%s::regclass, true)", (name,))
