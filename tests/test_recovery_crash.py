"""SIGKILL during recovery: backoffs are durable timers and attempt counts survive.

Worker subprocesses run tests/apps/recovery_app.py; every tool attempt is
appended to $KEEL_TEST_DIR/attempts.log before the tool does anything else, so
attempts made by a worker that was then killed still count. The test process
only starts runs and reads the store.
"""

from __future__ import annotations

from typing import Any

import pytest

from keel.types import StepKind
from tests.apps.harness import Harness, WorkerProc
from tests.faults import Attempt, read_log
from tests.limits import WAIT

APP = "tests.apps.recovery_app"
EPS = 0.005  # clock granularity between a recorded wake time and the next attempt's start

pytestmark = pytest.mark.timeout(90)


def _attempts(h: Harness, tool: str) -> list[Attempt]:
    return [a for a in read_log(h.data / "attempts.log") if a.tool == tool]


def _step(h: Harness, run_id: str, name: str) -> tuple[str, int, float | None, Any]:
    rows = [s for s in h.steps(run_id) if s.name == name]
    assert len(rows) <= 1, rows
    if not rows:
        return ("", 0, None, None)
    (rec,) = rows
    return (rec.status.value, rec.attempts, rec.wake_at, rec.error)


async def _pending(h: Harness, run_id: str, attempts: int, proc: WorkerProc) -> float:
    """Wait until the journal shows step `flaky` waiting out a backoff after `attempts`
    failed attempts; its wake time."""

    def ready() -> Any:
        status, n, wake_at, error = _step(h, run_id, "flaky")
        return wake_at if status == "pending" and n == attempts and error else None

    wake: float = await h.wait_until(
        ready, timeout=WAIT, what=f"a backoff after attempt {attempts}", procs=[proc]
    )
    return wake


async def test_sigkill_during_a_backoff_sleep_keeps_the_count_and_the_wake_time(
    worker_harness: Harness,
) -> None:
    h = worker_harness
    app = h.app(APP)
    run_id = "backoff-kill"
    # 503, 503, ok under Retry(attempts=4, backoff=2, jitter=False): waits of 2 s then 4 s
    await app.start("backoff", {"backoff": 2.0}, id=run_id, execute=False)
    wakes: list[float] = []
    pids: list[int] = []
    for failed in (1, 2):
        # inline_sleep_max above the backoff: the wait is held in the worker's memory
        proc = h.spawn(APP, KEEL_INLINE_SLEEP_MAX="600")
        wakes.append(await _pending(h, run_id, failed, proc))
        assert (await app.get_run(run_id)).status.value == "RUNNING"  # sleeping inline
        kill = await h.kill(proc, app, run_id)
        assert not kill.run_finished
        pids.append(proc.pid)
    final = h.spawn(APP, KEEL_INLINE_SLEEP_MAX="600")
    info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT, procs=[final])
    assert info.result == "charged"

    attempts = _attempts(h, "flaky")
    # the count continued across both kills: no attempt lost, none repeated
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "503"), (2, "503"), (3, "ok")]
    assert [a.pid for a in attempts] == [*pids, final.pid]
    status, n, _, _ = _step(h, run_id, "flaky")
    assert status == "ok" and n == 3
    # the journaled schedule: 2 s after attempt 1, 4 s after attempt 2 (no jitter) ...
    assert wakes[0] - attempts[0].at >= 2.0 - EPS
    assert wakes[1] - attempts[1].at >= 4.0 - EPS
    # ... and the restarted workers kept it: no attempt before its recorded wake time
    assert attempts[1].at >= wakes[0] - EPS
    assert attempts[2].at >= wakes[1] - EPS


async def test_a_long_backoff_suspends_the_run_and_survives_a_restart(
    worker_harness: Harness,
) -> None:
    h = worker_harness
    app = h.app(APP)
    run_id = "backoff-suspend"
    # backoff 1 s then 2 s, both longer than inline_sleep_max: the run suspends
    await app.start("backoff", {"backoff": 1.0}, id=run_id, execute=False)
    first = h.spawn(APP, KEEL_INLINE_SLEEP_MAX="0.5")
    info = await h.wait_status(app, run_id, "WAITING", timeout=WAIT, procs=[first])
    status, n, wake_at, _ = _step(h, run_id, "flaky")
    assert status == "pending" and n == 1 and wake_at is not None
    assert info.wake_at == wake_at and info.waiting_on == []
    # the worker holds nothing: kill it while the run waits
    await h.kill(first, app, run_id)
    second = h.spawn(APP, KEEL_INLINE_SLEEP_MAX="0.5")
    info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT, procs=[second])
    assert info.result == "charged"
    attempts = _attempts(h, "flaky")
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert attempts[0].pid == first.pid and {a.pid for a in attempts[1:]} == {second.pid}
    assert attempts[1].at >= wake_at - EPS
    assert _step(h, run_id, "flaky")[:2] == ("ok", 3)


async def test_replay_after_a_crash_skips_failed_phase_attempts(worker_harness: Harness) -> None:
    h = worker_harness
    app = h.app(APP)
    run_id = "phase-kill"
    await app.start("phased", {}, id=run_id, execute=False)
    proc = h.spawn(APP, KEEL_TEST_BLOCK="60")  # attempt 1 blocks in `block`
    await h.wait_until(
        lambda: _attempts(h, "block"), timeout=WAIT, what="the block step to start", procs=[proc]
    )
    await h.kill(proc, app, run_id)
    final = h.spawn(APP, KEEL_TEST_BLOCK="0")
    info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT, procs=[final])
    assert info.result == [1, 2, 3]
    log = read_log(h.data / "attempts.log")
    by_key: dict[str, list[int]] = {}
    for a in log:
        by_key.setdefault(a.key, []).append(a.pid)
    # the failed attempt's step ran once, in the first worker; replay skipped it
    assert by_key["phase:extract#0/0/extract#0"] == [proc.pid]
    assert by_key["phase:extract#0/1/extract#0"] == [proc.pid]
    # only the step in flight at the kill ran again
    assert by_key["phase:extract#0/1/block#0"] == [proc.pid, final.pid]
    assert set(by_key) == {
        "phase:extract#0/0/extract#0",
        "phase:extract#0/1/extract#0",
        "phase:extract#0/1/block#0",
    }
    rows = {s.key: s.status.value for s in h.steps(run_id) if s.kind is StepKind.PHASE}
    assert rows == {
        "phase:extract#0": "ok",
        "phase:extract#0/0": "error",
        "phase:extract#0/1": "ok",
    }
