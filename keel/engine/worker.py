"""The worker: claims runnable runs under a lease, executes them, keeps leases alive.

A run's lease is renewed by a heartbeat; a run whose worker died is taken over
once its lease expires, or at once when the dead worker was on this host. The
same heartbeat refreshes the worker's row in the store, so others can tell
whether a live worker serves a workflow. `drain()` is the graceful stop: no new
claims, no new steps, the steps in flight finish and their runs are handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from typing import Any

from keel.engine import retention
from keel.engine.clock import SAME_CLOCK, clock_offset
from keel.engine.execution import RunExecution
from keel.engine.runtime import Runtime
from keel.engine.slots import check_limit
from keel.engine.wakeups import Pacer, check_pacing
from keel.errors import StoreError
from keel.store.records import Claimed, WorkerBeat
from keel.store.wake import WakeFeed
from keel.types import RunStatus

log = logging.getLogger("keel.worker")
_HOST = socket.gethostname()
# Rows of workers gone without a clean exit (SIGKILL) are dropped after this long.
_FORGET_AFTER = 24 * 3600.0
_EMBEDDED_RUNS = 200  # runs an embedded worker executes at once (see Worker.__init__)
_REAP_EVERY = 2.0  # seconds between looks for dead workers on this host
# While paused by a store fault, the store is probed after 0.1 s, then twice as long
# each time (with jitter, so workers on many hosts do not probe in step), up to 5 s:
# a short blip resumes at once, a long outage costs one small query per 5 s.
_PROBE_FIRST, _PROBE_MAX = 0.1, 5.0
# Store faults that never pass by waiting: a damaged file, a payload sealed with a key
# this worker lacks, a wrong password or a database that does not exist.
_LASTING = frozenset({"corrupt", "unreadable", "auth", "missing"})
# Faults that pass by themselves (a server restarting, a lock held elsewhere): waited out
# even when met at start-up, once the store opened. Others met then (a read-only file, a
# full disk) are a setup problem: the worker stops and says so.
_PASSING = frozenset({"unreachable", "conflict", "busy", "locked"})


def _proc_stat(pid: int) -> tuple[str, str]:
    """(state, start time) of `pid` from /proc; ('', '') if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().decode(errors="replace").rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return "", ""


def _proc_start(pid: int) -> str:
    """The kernel's start time of `pid` (guards against pid reuse); '' if unknown."""
    return _proc_stat(pid)[1]


def make_owner() -> str:
    pid = os.getpid()
    return f"{_HOST}:{pid}:{_proc_start(pid)}:{secrets.token_hex(4)}"


def owner_is_dead(owner: str) -> bool:
    """True only when `owner` is a worker on this host whose process is gone."""
    parts = owner.split(":")
    if len(parts) != 4 or parts[0] != _HOST:
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    state, start = _proc_stat(pid)
    if state in ("Z", "X") and _threads(pid) <= 1:  # killed, not yet reaped: runs nothing
        return True
    return bool(parts[2]) and start != parts[2]


def _threads(pid: int) -> int:
    """Threads left in `pid` (a zombie leader can outlive live threads); 2 if unknown."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 2


class Worker:
    """Executes runs of the registered workflows.

    `ids` restricts it to those runs (the embedded worker of a process that starts
    runs); `None` means any run of a registered workflow (`keel worker`). While it
    runs, a row in the store's `workers` table says it is live (`keel workers`).
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        max_runs: int | None = None,
        ids: set[str] | None = None,
        concurrency: int | None = None,  # the name of `max_runs` before it existed
    ) -> None:
        self.rt = rt
        self.owner = make_owner()
        # Runs it executes at once: it claims only up to its free run slots. An embedded
        # worker (`ids`) executes only the runs its own process started and awaits: no
        # queue to spread, and holding them back only delays them (W3 took ~15% more CPU at
        # 16), so it keeps the old cap. Step slots bound its effects all the same.
        default = max(rt.settings.max_runs, _EMBEDDED_RUNS) if ids is not None else None
        limit = max_runs or concurrency or default or rt.settings.max_runs
        self.max_runs = check_limit("max_runs", limit)
        rt.step_slots()  # a bad max_steps is refused here, not at the first step
        check_pacing(rt.settings)
        self.ids = ids
        self.active: dict[str, asyncio.Task[RunStatus | None]] = {}
        self._executions: dict[str, RunExecution] = {}
        # Set by anything that may have made a run claimable; one Event, so a burst of
        # wake-ups while a claim runs costs one more claim, not one each.
        self._wake = asyncio.Event()
        self._feed: WakeFeed | None = None  # wake-ups from other processes (start())
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False  # no more claims
        self._draining = False  # no new steps either
        self._closed = asyncio.Event()  # stopped (or a loop failed): serve() returns
        self._left = False  # its row in the store is deleted
        self._crashed: BaseException | None = None
        self._started_at = 0.0
        # Set when the store cannot be used and the worker stops for it (no run is
        # failed): `serve` raises it, so `keel worker` exits with one line.
        self.fault: StoreError | None = None
        # A standalone worker pauses through faults that can pass (a full disk, a lock,
        # a read-only mount) and resumes when a heartbeat gets through; a worker embedded
        # in a command (`keel run`) stops and reports, since someone waits on it.
        self.pause_on_fault = ids is None
        self.paused: StoreError | None = None
        self._probe = 0.0  # seconds until the next probe of a paused store
        self._resumed_at = -1.0  # time.monotonic() of the last resume
        self._faulted: set[str] = set()  # runs abandoned by a fault: handed back on resume

    @property
    def beat_every(self) -> float:
        """Seconds between heartbeats: leases are renewed, and the worker's row refreshed."""
        return max(0.05, self.rt.settings.lease_seconds / 3)

    def notify(self) -> None:
        """Claim now: this process did something that may have made a run claimable."""
        self._wake.set()

    def _woken(self, workflow: str | None, run_id: str | None) -> None:
        """A wake-up from the store's feed: claim now if it may concern this worker
        (None: the feed cannot say which run, so look)."""
        if self.ids is not None:
            if run_id is not None and run_id not in self.ids:
                return
        elif workflow is not None and workflow not in self.rt.registry.workflows:
            return
        self._wake.set()

    def watch(self, run_id: str) -> None:
        if self.ids is not None:
            self.ids.add(run_id)
        self._wake.set()

    async def start(self) -> None:
        if self._tasks or self._closed.is_set():  # running, or stopped before it started
            return
        self._started_at = time.time()
        await self._beat(forget_before=self._started_at - _FORGET_AFTER)
        await self._reap_dead()
        if self.fault is not None:
            raise self.fault
        self._tasks = [
            asyncio.ensure_future(self._poll_loop()),
            asyncio.ensure_future(self._heartbeat_loop()),
            asyncio.ensure_future(self._reap_loop()),
        ]
        self._feed = self.rt.store.wake_feed()
        if self._feed is not None:
            self._tasks.append(
                asyncio.ensure_future(self._feed.run(self._woken, self.rt.settings.poll_interval))
            )
        if self.rt.settings.retention_days > 0:
            self._tasks.append(asyncio.ensure_future(self._retention_loop()))
        for t in self._tasks:
            t.add_done_callback(self._loop_ended)

    async def serve(self) -> None:
        """Run until cancelled, stopped or drained (what `keel worker` does).

        Cancelling it is `stop()`: runs in flight go back to the queue at once.
        """
        await self.start()
        try:
            await self._closed.wait()
        finally:
            await self.stop()
        if self.fault is not None:
            raise self.fault
        if self._crashed is not None:
            raise self._crashed

    def _store_fault(self, exc: StoreError) -> None:
        """Pause (a fault that can pass) or stop: the store cannot be used. Runs in flight
        keep their journal and resume later; none is failed for it."""
        # At start-up a fault is a setup problem (a read-only file, a wrong path): say so
        # and stop. Once running, one that can pass is waited out: one line when the
        # episode starts and one when it ends, however many calls failed in between.
        kind = exc.data.get("kind")
        waits = bool(self._tasks) or kind in _PASSING
        if self.pause_on_fault and waits and kind not in _LASTING:
            if self.paused is None:
                log.warning(
                    "keel worker paused: %s. No run was failed; runs in flight resume from"
                    " their journal. Retrying with backoff (up to every %g s).",
                    exc.message,
                    _PROBE_MAX,
                )
                self._probe = _PROBE_FIRST
            self.paused = exc
            return
        if self.fault is None:
            self.fault = exc  # raised by `serve` and by `App` waits, not logged twice
        self._stopping = True
        self._wake.set()
        self._closed.set()

    async def drain(self, grace: float) -> int:
        """Stop claiming, let the steps in flight finish (up to `grace` s), then stop.

        Each run stops at its next step boundary: the steps in flight finish and are
        journaled, and the run goes back to the queue at once, for any worker to take
        (no lease wait). A run still busy after `grace` seconds is interrupted as by
        `stop()`: its step in flight may run again. Returns how many runs were
        interrupted (0: every step in flight finished).
        """
        self._stopping = self._draining = True
        self._wake.set()
        for ex in self._executions.values():
            ex.draining = True
        running = list(self.active.values())
        late: set[asyncio.Task[RunStatus | None]] = set()
        if running:
            _, late = await asyncio.wait(running, timeout=max(0.0, grace))
        await self.stop()
        return len(late)

    async def stop(self) -> None:
        """Stop claiming, interrupt running runs and hand them back to the queue."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        cancelled = list(self.active.items())
        runs = [t for _, t in cancelled]
        for t in runs:
            t.cancel()
        for t in [*self._tasks, *runs]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        # A run whose task was cancelled before it reached the hand-back in
        # RunExecution.execute (not yet started, or waiting on a store call that a
        # network store answers later) would stay RUNNING under this worker's lease until
        # it expires: release each one here. A run already handed back, finished or
        # taken over is not this worker's any more, and release_run leaves it alone.
        for run_id in sorted({*self.active, *(r for r, t in cancelled if t.cancelled())}):
            self.active.pop(run_id, None)
            try:
                await self.rt.store.release_run(run_id, self.owner, [], time.time())
            except StoreError:
                pass  # the store is down: the lease expires and the run resumes then
            except Exception:
                log.exception("could not hand run %s back to the queue", run_id)
        # After a store fault the row cannot be deleted either: it stops counting as
        # live after three missed heartbeats.
        if self._started_at and not self._left and self.fault is None:
            self._left = True
            try:
                await self.rt.store.remove_worker(self.owner)
            except Exception as exc:  # it stops counting as live after three heartbeats
                log.warning("could not remove this worker's row: %s: %s", type(exc).__name__, exc)
        self._closed.set()

    def _loop_ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._crashed = task.exception()  # serve() re-raises it once the runs are back
        log.error("worker loop failed", exc_info=self._crashed)
        self._closed.set()

    async def _beat(self, forget_before: float | None = None) -> None:
        """Say this worker is live: one small upsert per heartbeat."""
        beat = WorkerBeat(
            owner=self.owner,
            host=_HOST,
            pid=os.getpid(),
            workflows=tuple(sorted(self.rt.registry.workflows)),
            started_at=self._started_at,
            seen_at=time.time(),
            beat_every=self.beat_every,
            embedded=self.ids is not None,
        )
        try:
            await self.rt.store.worker_beat(beat, forget_before=forget_before)
            await self._sync_clock()
        except StoreError as exc:  # a worker that cannot write does no good: pause or stop
            self._store_fault(exc)
        except Exception as exc:  # runs go on; the row is refreshed at the next beat
            log.warning("worker heartbeat failed: %s: %s", type(exc).__name__, exc)
        else:
            if self.paused is not None:
                await self._resume()

    async def _sync_clock(self) -> None:
        """Measure the store's clock against this process's (timers are set on the
        store's), taking the middle of the round trip as the moment it was read."""
        offset = await clock_offset(self.rt.store.now)
        # Within a second, the clocks are the same clock (keel.engine.clock.SAME_CLOCK).
        self.rt.clock_offset = offset if abs(offset) > SAME_CLOCK else 0.0

    async def _resume(self) -> None:
        """The store takes writes again: hand back the runs a fault interrupted (so any
        worker takes them now, not after their leases expire) and claim again."""
        log.warning("keel worker resumed: the store takes writes again")
        # Still paused while handing back, so no claim runs meanwhile: a claim could take a
        # faulted run again (its lease expired), and the release after it would hand the
        # new execution's run to another worker while it runs here.
        for run_id in sorted(self._faulted):
            if run_id in self.active:  # executing here again: it keeps its lease
                continue
            with contextlib.suppress(Exception):  # taken over meanwhile: nothing to do
                await self.rt.store.release_run(run_id, self.owner, [], time.time())
        self._faulted.clear()
        self.paused = None
        self._resumed_at = time.monotonic()
        self._wake.set()

    def _next_beat(self) -> float:
        """Seconds to the next heartbeat: the beat interval, or while paused the probe's
        backoff (exponential with jitter, capped)."""
        if self.paused is None:
            return self.beat_every
        wait = min(self._probe, _PROBE_MAX, self.beat_every)
        self._probe = min(self._probe * 2, _PROBE_MAX)
        return wait * random.uniform(0.5, 1.0)

    async def _poll_loop(self) -> None:
        pace = Pacer(self.rt.settings, self._feed)
        while not self._stopping:
            self._wake.clear()
            got = 0
            free = self.max_runs - len(self.active)
            if self.paused is not None:  # the heartbeat probes the store meanwhile
                free = 0
            watching = self.ids is None or bool(self.ids)
            if free > 0 and watching:
                try:
                    got = await self._claim(free)
                except StoreError as exc:
                    self._store_fault(exc)
                    if self.paused is None:
                        return
                except Exception:
                    log.exception("claiming runs failed; retrying")
            if got:
                pace.woke()
                if got >= free:
                    await asyncio.sleep(0)
                    continue
            due, busy = None, bool(self.active)
            if free > 0 and watching and not busy and self.paused is None and pace.wants_due():
                due = await self._next_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pace.wait(due, busy))
                pace.woke()

    async def _next_due(self) -> float | None:
        """Seconds until this worker's next timer is due (None: none, or unknown)."""
        try:
            ids = None if self.ids is None else list(self.ids)  # a copy: the set changes
            return await self.rt.store.next_due(list(self.rt.registry.workflows), ids)
        except StoreError as exc:
            self._store_fault(exc)
        except Exception:
            log.exception("reading the next timer failed; polling meanwhile")
        return None

    async def _reap_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(_REAP_EVERY)
            if self.paused is None:
                await self._reap_dead()

    async def _claim(self, limit: int) -> int:
        rt = self.rt
        ids = None
        if self.ids is not None:
            ids = [i for i in self.ids if i not in self.active]
            if not ids:
                return 0
        claimed = await rt.store.claim(
            self.owner,
            rt.settings.lease_seconds,
            limit,
            rt.registry.workflows.keys(),
            ids=ids,
        )
        for c in claimed:
            # Never two executions of one run here: its lease expired while a fault paused
            # this worker, and the claim took it back while the first still finishes.
            if c.run.id not in self.active:
                self.active[c.run.id] = asyncio.ensure_future(self._execute(c))
        return len(claimed)

    async def _execute(self, claimed: Claimed) -> RunStatus | None:
        run_id = claimed.run.id
        status: RunStatus | None = None
        try:
            wf = self.rt.registry.workflow(claimed.run.workflow)
            ex = RunExecution(self.rt, claimed, self.owner, wf)
            ex.draining = self._draining
            self._executions[run_id] = ex
            status = await ex.execute()
            if ex.fault is not None and ex.fault_at < self._resumed_at and self.paused is None:
                # a fault of an episode already over, reported late: hand the run back now
                with contextlib.suppress(Exception):
                    await self.rt.store.release_run(run_id, self.owner, [], time.time())
            elif ex.fault is not None:
                self._faulted.add(run_id)
                self._store_fault(ex.fault)
            return status
        except asyncio.CancelledError:
            raise
        except StoreError as exc:
            self._faulted.add(run_id)
            self._store_fault(exc)
            return None
        except Exception:
            log.exception("run %s crashed the executor; it will be retried", run_id)
            return None
        finally:
            self.active.pop(run_id, None)
            self._executions.pop(run_id, None)
            if status is not None and status.terminal and self.ids is not None:
                self.ids.discard(run_id)
            if status is not None and self.rt.on_settled is not None:
                self.rt.on_settled(run_id, status)
            self._wake.set()

    async def _heartbeat_loop(self) -> None:
        # Runs until stop(), draining included: leases of runs finishing their steps
        # must not expire meanwhile.
        lease = self.rt.settings.lease_seconds
        while True:
            await asyncio.sleep(self._next_beat())
            await self._beat()
            ids = list(self.active)
            if not ids or self.paused is not None:  # the probe failed: renewing would too
                continue
            try:
                held = await self.rt.store.renew(self.owner, ids, lease)
            except StoreError as exc:
                self._store_fault(exc)
                if self.paused is None:
                    return
                continue
            except Exception:
                log.exception("lease renewal failed")
                continue
            for run_id in ids:
                task = self.active.get(run_id)
                if run_id not in held and task is not None:
                    log.warning("lost the lease on run %s (cancelled or taken over)", run_id)
                    task.cancel()

    async def _retention_loop(self) -> None:
        """Apply `retention_days` (keel.engine.retention.sweep). A failed sweep is logged
        and tried again next time: housekeeping never stops the worker."""
        settings = self.rt.settings
        while not self._stopping:
            if self.paused is not None:  # the store is down: housekeeping waits for it
                await asyncio.sleep(max(0.1, settings.retention_interval))
                continue
            try:
                done = await retention.sweep(
                    self.rt.store,
                    settings.retention_days,
                    time.time(),
                    every=settings.retention_interval,
                    stop=lambda: self._stopping,
                )
                if done is not None and done.runs:
                    log.info(
                        "retention: purged %d run(s) that ended over %g day(s) ago",
                        done.runs,
                        settings.retention_days,
                    )
            except StoreError as exc:  # one episode, one line: the worker's pause says it
                self._store_fault(exc)
                if self.paused is None:
                    return
            except Exception as exc:
                log.warning("retention sweep failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(max(0.1, settings.retention_interval))

    async def _reap_dead(self) -> None:
        """Release leases of dead workers on this host, so their runs restart now."""
        try:
            for owner in await self.rt.store.running_owners():
                if owner != self.owner and owner_is_dead(owner):
                    n = await self.rt.store.expire_owner(owner)
                    log.info("recovered %d run(s) of dead worker %s", n, owner)
                    self._wake.set()  # its runs are claimable now
        except StoreError as exc:
            self._store_fault(exc)
        except Exception:
            log.exception("dead-worker recovery failed")
