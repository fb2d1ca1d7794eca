"""SIGTERM and Ctrl+C drain `keel worker`: no new runs or steps, the steps in flight
finish and are journaled, the runs go back to the queue at once, exit 0. A step
longer than --grace is interrupted (and may run again); a second signal stops at once.

The worker is the real CLI in a subprocess; the steps in flight are `gated` tools
that finish only when the test opens their gate (tests/apps/worker_app.py).
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import pytest

import keel
from tests.apps.harness import Harness, WorkerProc
from tests.apps.worker_app import open_gate
from tests.limits import WAIT

pytestmark = pytest.mark.slow

MODULE = "tests.apps.worker_app"
# Leases far longer than any wait below: a run that is taken over in time was handed
# back by its worker, never recovered by lease expiry.
LONG_LEASE = 600


def worker(h: Harness, *args: str) -> WorkerProc:
    return h.spawn_keel("worker", MODULE, *args, KEEL_LEASE_SECONDS=LONG_LEASE)


async def in_flight(h: Harness, proc: WorkerProc, key: str) -> None:
    await h.wait_until(
        lambda: (key, proc.pid) in h.executions(),
        timeout=WAIT,
        what=f"{key} to be in flight",
        procs=[proc],
    )


async def said(h: Harness, proc: WorkerProc, text: str) -> None:
    await h.wait_until(
        lambda: text in proc.stderr(), timeout=WAIT, what=f"{text!r} on stderr", procs=[proc]
    )


def exit_code(proc: WorkerProc, timeout: float = WAIT) -> int:
    return proc.popen.wait(timeout=timeout)


def journal(h: Harness, run_id: str) -> list[tuple[str, str]]:
    rows = sorted(h.steps(run_id), key=lambda s: s.started_at)
    return [(s.key, s.status.value) for s in rows]


async def test_sigterm_lets_the_step_in_flight_finish_and_hands_the_run_over_at_once(
    worker_harness: Harness,
) -> None:
    h = worker_harness
    app = h.app(MODULE)
    run_id = "drain-1"
    await app.start("drainable", {}, id=run_id, execute=False)
    first = worker(h, "--grace", "300")
    await in_flight(h, first, f"{run_id}:gated#0")

    first.popen.send_signal(signal.SIGTERM)
    await said(h, first, "draining")
    # The gate is shut: the step cannot have finished, so the worker is still there,
    # holding the run while its step runs.
    assert first.alive(), first.stderr()
    running = await app.get_run(run_id)
    assert running.status is keel.RunStatus.RUNNING
    assert running.lease_owner is not None and f":{first.pid}:" in running.lease_owner

    open_gate(h.data, 1)
    assert exit_code(first) == 0, first.stderr()
    assert "drained: every step in flight finished" in first.stderr()
    # The step in flight finished and is journaled; the next one never started.
    assert journal(h, run_id) == [("work#0", "ok"), ("gated#0", "ok")]
    stopped = await app.get_run(run_id)
    assert stopped.status is keel.RunStatus.PENDING and stopped.lease_owner is None
    assert first.pid not in h.worker_pids()  # its heartbeat row went with it

    second = worker(h)
    info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT, procs=[second])
    assert info.result == [0, 1, 2]
    # Every step ran exactly once: the one in flight at SIGTERM did not run again.
    assert h.executions() == [
        (f"{run_id}:work#0", first.pid),
        (f"{run_id}:gated#0", first.pid),
        (f"{run_id}:work#1", second.pid),
    ]
    assert h.effects() == sorted(f"{run_id}:{k}" for k in ("work#0", "gated#0", "work#1"))
    assert h.effect_dupes() == []
    assert h.terminate(second) == 0, second.stderr()


async def test_a_step_longer_than_the_grace_is_interrupted_and_may_run_again(
    worker_harness: Harness,
) -> None:
    """A sync tool blocks a thread that cannot be cancelled: the worker exits all the same."""
    h = worker_harness
    app = h.app(MODULE)
    run_id = "drain-late"
    await app.start("drainable", {"sync": True}, id=run_id, execute=False)
    first = worker(h, "--grace", "1")
    await in_flight(h, first, f"{run_id}:gated_sync#0")

    first.popen.send_signal(signal.SIGTERM)
    assert exit_code(first) == 0, first.stderr()  # the gate is still shut
    assert "grace of 1s ran out: 1 run(s) were interrupted" in first.stderr()
    stopped = await app.get_run(run_id)
    assert stopped.status is keel.RunStatus.PENDING and stopped.lease_owner is None
    assert journal(h, run_id) == [("work#0", "ok")]
    assert first.pid not in h.worker_pids()

    open_gate(h.data, 1)
    second = worker(h)
    info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT, procs=[second])
    assert info.result == [0, 1, 2]
    # At least once: the interrupted step ran again; the journaled one did not.
    counts = Counter(k for k, _ in h.executions())
    assert counts == {f"{run_id}:work#0": 1, f"{run_id}:gated_sync#0": 2, f"{run_id}:work#1": 1}
    assert h.terminate(second) == 0, second.stderr()


@pytest.mark.parametrize(
    ("first_sig", "second_sig"),
    [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGINT)],
    ids=["sigterm-twice", "ctrl-c-twice"],
)
async def test_a_second_signal_stops_at_once_and_still_hands_the_run_back(
    worker_harness: Harness, first_sig: signal.Signals, second_sig: signal.Signals
) -> None:
    h = worker_harness
    app = h.app(MODULE)
    run_id = "drain-twice"
    await app.start("drainable", {}, id=run_id, execute=False)
    first = worker(h, "--grace", "3000")  # only the second signal can end it in time
    await in_flight(h, first, f"{run_id}:gated#0")

    first.popen.send_signal(first_sig)
    await said(h, first, "draining")
    first.popen.send_signal(second_sig)
    assert exit_code(first) == 0, first.stderr()
    assert "stopping now" in first.stderr()
    stopped = await app.get_run(run_id)
    assert stopped.status is keel.RunStatus.PENDING and stopped.lease_owner is None
    assert journal(h, run_id) == [("work#0", "ok")]  # the interrupted step left no record

    open_gate(h.data, 1)
    second = worker(h)
    await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT, procs=[second])
    assert Counter(k for k, _ in h.executions())[f"{run_id}:gated#0"] == 2
    assert h.terminate(second) == 0, second.stderr()


async def test_an_idle_worker_drains_at_once(worker_harness: Harness) -> None:
    h = worker_harness
    proc = worker(h, "--grace", "3000")
    await h.wait_beat(proc)
    proc.popen.send_signal(signal.SIGINT)
    assert exit_code(proc) == 0, proc.stderr()
    assert "drained" in proc.stderr()
    assert proc.pid not in h.worker_pids()


async def test_draining_a_map_finishes_the_items_in_flight_and_starts_no_more(
    worker_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process `Worker.drain`: two lanes of a five-item map are in flight."""
    h = worker_harness
    monkeypatch.setenv("KEEL_TEST_DIR", str(h.data))
    app = h.app(MODULE)
    run_id = "drain-map"
    await app.start("fan", {"n": 5, "concurrency": 2}, id=run_id, execute=False)
    w = app.worker()
    await w.start()
    await h.wait_until(
        lambda: len(h.executions()) == 2, timeout=WAIT, what="two map items in flight"
    )
    draining = asyncio.ensure_future(w.drain(300))
    await asyncio.sleep(0.2)
    assert not draining.done()  # both items are still in flight: their gates are shut
    open_gate(h.data, 0)
    open_gate(h.data, 1)
    assert await asyncio.wait_for(draining, 60) == 0  # nothing had to be interrupted
    info = await app.get_run(run_id)
    assert info.status is keel.RunStatus.PENDING and info.lease_owner is None
    done = [k for k, s in journal(h, run_id) if s == "ok"]
    assert sorted(done) == ["map:gated#0/0", "map:gated#0/1"]

    for i in range(2, 5):
        open_gate(h.data, i)
    again = app.worker()
    serving = asyncio.ensure_future(again.serve())
    try:
        info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    assert info.result == [0, 1, 2, 3, 4]
    counts = Counter(k for k, _ in h.executions())
    assert counts == {f"{run_id}:map:gated#0/{i}": 1 for i in range(5)}


async def test_a_retry_backoff_under_a_drain_becomes_a_durable_timer(
    worker_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next attempt is a new start of the tool: a draining worker leaves it to the
    next worker, at the time the backoff said."""
    h = worker_harness
    monkeypatch.setenv("KEEL_TEST_DIR", str(h.data))
    app = h.app(MODULE)
    run_id = "drain-retry"
    await app.start("retried", {}, id=run_id, execute=False)
    w = app.worker()
    await w.start()
    await h.wait_until(
        lambda: any(
            s.key == "flaky#0" and s.status.value == "pending" and s.error is not None
            for s in h.steps(run_id)
        ),
        timeout=WAIT,
        what="the first attempt to fail and its backoff to start",
    )
    assert await asyncio.wait_for(w.drain(300), 60) == 0
    info = await app.get_run(run_id)
    assert info.status is keel.RunStatus.WAITING and info.wake_at is not None
    assert info.lease_owner is None
    assert [k for k, _ in h.executions()] == [f"{run_id}:flaky#0"]  # no second attempt here

    again = app.worker()
    serving = asyncio.ensure_future(again.serve())
    try:
        info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    assert info.result == 1
    assert [k for k, _ in h.executions()] == [f"{run_id}:flaky#0"] * 2
    (step,) = await app.steps(run_id)
    assert step.attempts == 2


async def test_app_close_with_grace_drains_the_embedded_worker(
    worker_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = worker_harness
    monkeypatch.setenv("KEEL_TEST_DIR", str(h.data))
    app = h.app(MODULE)
    run_id = "drain-embedded"
    await app.start("drainable", {}, id=run_id)  # the embedded worker runs it
    await h.wait_until(
        lambda: any(k == f"{run_id}:gated#0" for k, _ in h.executions()),
        timeout=WAIT,
        what="gated#0 in flight",
    )
    closing = asyncio.ensure_future(app.stop_worker(grace=300))
    await asyncio.sleep(0.2)
    assert not closing.done()  # gated#0 is still in flight: its gate is shut
    open_gate(h.data, 1)
    await asyncio.wait_for(closing, 60)
    assert journal(h, run_id) == [("work#0", "ok"), ("gated#0", "ok")]
    assert (await app.get_run(run_id)).status is keel.RunStatus.PENDING
