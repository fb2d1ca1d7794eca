"""Retention with real `keel worker` processes: a purge while a worker executes runs,
and workers applying a retention setting by themselves (docs/storage.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter

import pytest

from keel.errors import RunNotFound
from keel.store import Store
from tests.apps.harness import Harness
from tests.apps.retention_app import gate
from tests.backends import sql
from tests.limits import WAIT

pytestmark = pytest.mark.slow

APP = "tests.apps.retention_app"
DAY = 86400.0
OLD_RUNS = 200
# small batches: the purge takes many turns at the write lock, the worker the others
PURGE = ("runs", "purge", "--older-than", "30d", "--batch", "2", "--json")
CHAIN = {"big#0", "work#0", "work#1", "work#2"}  # chain(n=4)'s journal


def _keys(h: Harness, run_id: str) -> set[str]:
    return {s.key for s in h.steps(run_id)}


def _status(h: Harness, run_id: str) -> str | None:
    run = h.store(lambda s: s.get_run(run_id))
    return None if run is None else run.status.value


def _dangling(h: Harness) -> list[str]:
    """Blobs a step refers to that the store no longer has."""

    steps = [s for s in h.all_steps() if s.blob]

    async def missing(store: Store) -> list[str]:
        gone = []
        for step in steps:
            try:
                await store.load_blob(step.blob)  # type: ignore[arg-type]
            except RunNotFound:
                gone.append(f"{step.run_id}:{step.key}")
        return gone

    return h.store(missing)


async def test_a_purge_while_a_worker_executes_runs_fails_none_and_loses_no_step(
    worker_harness: Harness,
) -> None:
    h = worker_harness
    h.base_env["KEEL_LEASE_SECONDS"] = "30"  # the worker stays live: no lease may lapse
    worker = h.spawn_keel("worker", APP)
    await h.wait_beat(worker)
    app = h.app(APP)

    old = [f"old-{i:03d}" for i in range(OLD_RUNS)]
    for run_id in old:
        await app.start("chain", {"n": 4}, id=run_id, execute=False)
    await h.wait_until(
        lambda: h.status_counts() == {"SUCCEEDED": OLD_RUNS},
        timeout=WAIT,
        what=f"{OLD_RUNS} runs to succeed",
        procs=[worker],
    )
    # Forty days pass for them (they share one blob with every run to come).
    back = 40 * DAY
    # (no store interface moves a run's times back: SQL on the store's database)
    sql(h.url, "UPDATE runs SET created_at = created_at - ?, ended_at = ended_at - ?", back, back)

    # In flight during the whole purge: held mid-run until the purge is over.
    held = [f"held-{i}" for i in range(3)]
    for i, run_id in enumerate(held):
        await app.start("held", {"i": i}, id=run_id, execute=False)
    await app.start("waits", {}, id="waiting", execute=False)
    await h.wait_until(
        lambda: all("work#0" in _keys(h, r) for r in held) and _status(h, "waiting") == "WAITING",
        timeout=WAIT,
        what="held runs mid-run and a run waiting",
        procs=[worker],
    )

    purge = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", *PURGE],
        cwd=h.root,
        env=h.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # New runs keep coming while it purges; the worker executes them meanwhile.
        new: list[str] = []
        while purge.poll() is None or len(new) < 20:
            run_id = f"new-{len(new):03d}"
            await app.start("chain", {"n": 4}, id=run_id, execute=False)
            new.append(run_id)
            await asyncio.sleep(0.02)
        out, err = await asyncio.to_thread(purge.communicate, timeout=WAIT)
    finally:
        if purge.poll() is None:
            purge.kill()
            purge.wait()
    assert purge.returncode == 0, err.decode()
    purged = json.loads(out)["purged"]
    assert (purged["runs"], purged["steps"]) == (OLD_RUNS, OLD_RUNS * len(CHAIN))
    assert purged["blobs"] == 0  # every new run still refers to the one blob

    for i in range(len(held)):
        gate(i, h.data).touch()
    await h.wait_until(
        lambda: h.status_counts() == {"SUCCEEDED": len(new) + len(held), "WAITING": 1},
        timeout=WAIT,
        what="every run to succeed",
        procs=[worker],
    )
    assert [r.id for r in h.runs() if r.id.startswith("old-")] == []
    assert [r for r in old if h.steps(r)] == []
    for run_id in new:
        assert _keys(h, run_id) == CHAIN, run_id
    for run_id in held:
        assert _keys(h, run_id) == {"work#0", "hold#0", "work#1"}, run_id
    assert _dangling(h) == []
    info = await app.get_run(new[-1])
    steps = {s.key: s for s in await app.steps(new[-1])}
    assert info.result == 6 and steps["big#0"].blob is not None
    # No step of a run executed during the purge ran twice, and none was lost.
    counts = Counter(k for k, _ in h.executions())
    assert {k: c for k, c in counts.items() if c > 1} == {}
    assert worker.alive(), worker.stderr()
    assert "Traceback" not in worker.stderr() and "error" not in worker.stderr().lower()


async def test_workers_apply_the_retention_setting_by_themselves(
    worker_harness: Harness,
) -> None:
    h = worker_harness
    h.base_env["KEEL_LEASE_SECONDS"] = "30"
    retention = {"KEEL_RETENTION_DAYS": str(2 / DAY), "KEEL_RETENTION_INTERVAL": "0.5"}
    workers = [h.spawn_keel("worker", APP, **retention) for _ in range(2)]  # sweeping together
    for w in workers:
        await h.wait_beat(w)
    app = h.app(APP)
    waiting = await app.start("waits", {}, id="waiting", execute=False)
    runs = [f"run-{i:02d}" for i in range(20)]
    for run_id in runs:
        await app.start("chain", {"n": 4}, id=run_id, execute=False)

    # They ran (each work step once), and ended: two seconds later the workers purge them.
    await h.wait_until(
        lambda: (
            len(h.executions()) == 3 * len(runs)
            and [r.id for r in h.runs() if r.workflow == "chain"] == []
        ),
        timeout=WAIT,
        what="the chain runs to run, end and be purged",
        procs=workers,
    )
    assert Counter(k.split(":", 1)[0] for k, _ in h.executions()) == {r: 3 for r in runs}
    assert [r for r in runs if h.steps(r)] == []
    # a run that has not ended is never purged, however old
    assert (await waiting.info()).status.value == "WAITING"
    await waiting.signal("go", "now")
    assert await waiting.result(WAIT) == "now"
    await h.wait_until(
        lambda: h.runs() == [],
        timeout=WAIT,
        what="the signalled run to be purged once it ended",
        procs=workers,
    )
    for w in workers:
        assert w.alive(), w.stderr()
        assert "retention sweep failed" not in w.stderr(), w.stderr()
    # the blob every chain run shared went with the last of them (no interface lists
    # blobs no run refers to: counted in the store's database)
    assert sql(h.url, "SELECT COUNT(*) FROM blobs") == [(0,)]
