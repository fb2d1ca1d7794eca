"""`JournalStore`: what the engine persists to execute runs: runs and their journals,
queue leases, timers, signals and worker heartbeats.

Every write that depends on owning a run checks the lease in the same transaction and
raises `LeaseLost` when another worker holds it now. Lease expiry and timer due-ness are
decided with the store's own clock (`now()`), never a worker's: a worker whose clock is
off cannot take a live lease or wake a timer early.

Workers learn that runs became claimable from a wake feed (`wake_feed()`, see
`keel.store.wake`) and when the next timer is due from `next_due()`, so an idle worker
does not have to run the claim query over and over.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence

from keel.store.records import Claimed, RunFilter, StepWrite, WorkerBeat
from keel.store.unit import Committed, UnitOfWork
from keel.store.wake import WakeFeed
from keel.types import RunInfo, RunStatus, StepRecord, StructuredError


class JournalStore(abc.ABC):
    """Runs, journals, leases, timers, signals and worker heartbeats.

    Example:
        run, created = await store.create_run("run_1", "triage", b"{}", time.time())
        [claimed] = await store.claim("w1", 30.0, 1, ["triage"])
        await store.commit(UnitOfWork(run.id, "w1", steps=[write]))
    """

    @abc.abstractmethod
    async def now(self) -> float:
        """The store's clock (epoch seconds): the one leases and timers are measured on."""

    # -- runs ---------------------------------------------------------------------

    @abc.abstractmethod
    async def create_run(
        self,
        run_id: str,
        workflow: str,
        input_json: bytes,
        now: float,
        tenant: str | None = None,
        session: str | None = None,
    ) -> tuple[RunInfo, bool]:
        """Insert a PENDING run of `session` (None: its own); return (run, created). An
        existing id is returned as it is, with `created` False (idempotent starts)."""

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> RunInfo | None:
        """The run, or None if there is no such run."""

    @abc.abstractmethod
    async def list_runs(self, flt: RunFilter) -> list[RunInfo]:
        """Runs matching `flt`, the newest created first, at most `flt.limit`."""

    @abc.abstractmethod
    async def cancel_run(self, run_id: str, now: float) -> RunInfo:
        """Cancel a run that has not ended (its lease and timer go); an ended run is left
        as it is. Returns the run after; raises `RunNotFound` for an unknown id."""

    # -- journal ------------------------------------------------------------------

    @abc.abstractmethod
    async def load_steps(self, run_id: str) -> list[StepRecord]:
        """Every journal entry of the run (any order; the engine indexes them by key)."""

    @abc.abstractmethod
    async def load_blob(self, digest: str) -> bytes:
        """An out-of-line output by its digest; raises `RunNotFound` if it is missing."""

    @abc.abstractmethod
    async def save_blob(self, digest: str, data: bytes) -> None:
        """Store `data` out of line under `digest` (sealed with the store's codec), for
        `load_blob`. Content-addressed: saving a digest that exists changes nothing, so
        writing the same value twice (a replayed worker) is harmless."""

    @abc.abstractmethod
    async def commit(self, uow: UnitOfWork) -> Committed:
        """Write a unit of work in one transaction: its journal entries (an entry with an
        existing key replaces it) with their usage, the reviews and escalations it opens
        (idempotent on id; each new one audited), all or nothing.

        With `uow.owner`, raises `LeaseLost` (writing nothing) unless that owner holds the
        run's RUNNING lease. Returns the ids of the reviews and escalations it created.
        """

    # -- signals ------------------------------------------------------------------

    @abc.abstractmethod
    async def take_signal(
        self, run_id: str, owner: str, name: str, write: StepWrite, writes: Sequence[StepWrite]
    ) -> bytes | None:
        """Consume the oldest unconsumed `name` signal and journal `write` with it as its
        output (set on `write`), together with `writes`; None (only `writes` journaled)
        when none is buffered. Raises `LeaseLost` unless `owner` holds the run."""

    @abc.abstractmethod
    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload_json: bytes,
        now: float,
        *,
        only_if_waiting: bool = False,
    ) -> RunInfo:
        """Buffer a signal for the run and re-enqueue it if it is WAITING for `name`.

        Returns the run as it was before the signal. Raises `RunNotFound` for an unknown
        run, `SignalRefused` (built by `keel.store.base.signal_refused`) when the run has
        ended, and with `only_if_waiting` when the run is not WAITING for `name`; the
        check and the write are one transaction.
        """

    # -- queue and leases ---------------------------------------------------------

    @abc.abstractmethod
    async def claim(
        self,
        owner: str,
        lease_seconds: float,
        limit: int,
        workflows: Iterable[str],
        ids: Iterable[str] | None = None,
    ) -> list[Claimed]:
        """Lease up to `limit` ready runs of `workflows` (only `ids`, if given) to
        `owner` for `lease_seconds`, oldest first.

        Ready: PENDING, WAITING with a timer due, or RUNNING with an expired lease, all
        judged on the store's clock; two workers never both claim one run. Returns
        nothing (and takes no write lock) when nothing is ready.
        """

    @abc.abstractmethod
    async def next_due(
        self, workflows: Iterable[str], ids: Iterable[str] | None = None
    ) -> float | None:
        """Seconds from the store's now until the earliest timer of a WAITING run of
        `workflows` (only `ids`, if given) is due (0 or less: due already); None when no
        such run has a timer. A worker sleeps until then instead of polling.

        Example:
            due = await store.next_due(["triage"])  # 42.0: a timer wakes in 42 s
        """

    def wake_feed(self) -> WakeFeed | None:
        """A new feed of wake-ups from other processes' commits (one per worker), or
        None when this store has none (the worker then polls with backoff).

        Example:
            feed = store.wake_feed()  # Postgres: LISTEN keel_wake on its own connection
        """
        return None

    @abc.abstractmethod
    async def renew(self, owner: str, run_ids: Sequence[str], lease_seconds: float) -> set[str]:
        """Extend `owner`'s leases on `run_ids` to `lease_seconds` from the store's now;
        return the ids this owner still holds (the others were lost)."""

    @abc.abstractmethod
    async def suspend_run(
        self,
        run_id: str,
        owner: str,
        wake_at: float | None,
        waiting_on: Sequence[str],
        writes: Sequence[StepWrite],
        now: float,
        state_json: bytes | None = None,
    ) -> RunStatus:
        """Journal `writes` and park the run WAITING until `wake_at` or a signal in
        `waiting_on` (PENDING at once if such a signal already arrived); its lease goes.

        `wake_at` and `now` are on the caller's clock: the store wakes the run
        `wake_at - now` seconds after its own now, so a skewed worker clock moves no
        timer. `state_json` is the state so far, so reviewers see it while the run
        waits. Raises `LeaseLost` unless `owner` holds the run.
        """

    @abc.abstractmethod
    async def finish_run(
        self,
        run_id: str,
        owner: str,
        status: RunStatus,
        result_json: bytes | None,
        error: StructuredError | None,
        state_json: bytes | None,
        writes: Sequence[StepWrite],
        now: float,
    ) -> None:
        """Journal `writes` and end the run with `status`, its result or error and final
        state, releasing its lease. Raises `LeaseLost` unless `owner` holds the run."""

    @abc.abstractmethod
    async def release_run(
        self, run_id: str, owner: str, writes: Sequence[StepWrite], now: float
    ) -> None:
        """Journal `writes` and hand a RUNNING run back to the queue (graceful worker
        shutdown); does nothing if `owner` no longer holds it."""

    @abc.abstractmethod
    async def running_owners(self) -> list[str]:
        """Distinct owners holding RUNNING leases (for dead-worker detection)."""

    @abc.abstractmethod
    async def expire_owner(self, owner: str) -> int:
        """Expire every lease `owner` holds, so other workers take its runs now; how many."""

    # -- worker heartbeats --------------------------------------------------------

    @abc.abstractmethod
    async def worker_beat(self, beat: WorkerBeat, *, forget_before: float | None = None) -> None:
        """Insert or refresh a worker's row; with `forget_before`, drop rows of workers
        last seen before then (gone without a clean exit)."""

    @abc.abstractmethod
    async def list_workers(self) -> list[WorkerBeat]:
        """Every worker row, live or not, the most recently seen first."""

    @abc.abstractmethod
    async def remove_worker(self, owner: str) -> None:
        """Delete a worker's row (its clean exit); unknown owners are ignored."""
