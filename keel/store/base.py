"""The store interface every backend implements (runs, journal, leases, signals, blobs)."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from keel.errors import ConfigError, SignalRefused
from keel.types import Escalation, RunInfo, RunStatus, StepRecord, StructuredError


@dataclass(slots=True)
class StepWrite:
    """A journal entry to persist, with its output already encoded as JSON."""

    record: StepRecord
    output_json: bytes | None = None
    blob: bytes | None = None  # the out-of-line output when record.blob is set
    # Metered usage of the step (model, tokens, cost), stored with it atomically.
    meter: dict[str, Any] | None = None


@dataclass(slots=True)
class Claimed:
    run: RunInfo
    resumed: bool  # it had run before (recovery, timer or signal)


# A worker is live while its last heartbeat is younger than this many heartbeat intervals.
LIVE_BEATS = 3


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """A worker's row in the store, refreshed by its heartbeat (`keel workers` lists them).

    Example:
        live = [w for w in await store.list_workers() if w.live(time.time())]
    """

    owner: str  # its lease owner id
    host: str
    pid: int
    workflows: tuple[str, ...]
    started_at: float
    seen_at: float  # its last heartbeat
    beat_every: float  # seconds between its heartbeats
    embedded: bool = False  # an App's own worker: only the runs its process started

    def live(self, now: float) -> bool:
        return now - self.seen_at <= LIVE_BEATS * self.beat_every


@dataclass(slots=True)
class RunFilter:
    status: RunStatus | None = None
    workflow: str | None = None
    since: float | None = None  # created_at >= since
    until: float | None = None  # created_at < until
    limit: int = 100
    extra: dict[str, Any] = field(default_factory=dict)


ENDED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
# Cost reports show the usage of purged runs under this name when grouped by run or step.
PURGED_RUNS = "(purged runs)"


@dataclass(frozen=True, slots=True)
class PurgeScope:
    """Which runs a purge removes: ended ones (never PENDING, RUNNING or WAITING) whose
    `ended_at` is before `ended_before`, optionally of some statuses or one workflow.

    Example:
        scope = PurgeScope(ended_before=time.time() - 30 * 86400, workflow="triage")
    """

    ended_before: float  # epoch seconds
    statuses: tuple[RunStatus, ...] = ENDED
    workflow: str | None = None

    def __post_init__(self) -> None:
        live = [s.value for s in self.statuses if not s.terminal]
        if live or not self.statuses:
            raise ConfigError(
                f"only ended runs can be purged, not {', '.join(live) or 'no status'}: use"
                f" {', '.join(s.value for s in ENDED)}",
                statuses=live,
            )


@dataclass(slots=True)
class Purged:
    """Rows a purge deleted (or, counted dry, would delete), per table.

    `usage` rows are not lost: they are folded into per-day totals first
    (`usage_rollup`), which cost reports keep answering from.
    """

    runs: int = 0
    steps: int = 0
    signals: int = 0
    blobs: int = 0  # out-of-line outputs no remaining step refers to
    spans: int = 0
    reviews: int = 0  # approvals, low-confidence, novelty and sampled reviews
    escalations: int = 0
    usage: int = 0
    sample_counts: int = 0  # the sampler's per-day counters
    cache: int = 0  # expired response-cache entries

    def add(self, other: Purged) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def counts(self) -> dict[str, int]:
        """Table -> rows, in a fixed order (the `--json` shape)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class StoreSpace:
    """How big a store is, and what a purge can give back to the file system.

    Deleted rows free pages inside the file, which new writes reuse. The file itself
    shrinks only when `shrinks` (SQLite incremental auto-vacuum) or after a full
    `reclaim_space(full=True)`.
    """

    size_bytes: int  # the file's pages, in use or free
    free_bytes: int  # free pages, reused before the file grows
    shrinks: bool  # purges return freed pages to the file system


def audit_detail(decision: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a person's decision: which fields it had and which
    tool arguments an edit changed, never their values.

    The decision itself (arguments, outputs, labels, notes) lives in the request and the
    run's journal, and goes when the run is purged; the audit log is append-only and
    kept, so it holds no payload (docs/storage.md). Not even a digest of one: a digest
    of a guessable value (an amount, a yes/no label) gives the value away.
    """
    out: dict[str, Any] = {"fields": sorted(k for k, v in decision.items() if v is not None)}
    args, original = decision.get("args"), decision.get("original")
    if isinstance(args, dict) and isinstance(original, dict):
        out["changed"] = sorted(
            k for k in {*args, *original} if args.get(k, ...) != original.get(k, ...)
        )
    return out


class Store(abc.ABC):
    """Persistence for runs, their journals, queue leases and signals.

    Every write that depends on owning a run checks the lease in the same
    transaction and raises `LeaseLost` when another worker owns it now.
    """

    url: str

    @abc.abstractmethod
    async def create_run(
        self, run_id: str, workflow: str, input_json: bytes, now: float, tenant: str | None = None
    ) -> tuple[RunInfo, bool]:
        """Insert a PENDING run; return (run, created). An existing id is returned as is."""

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> RunInfo | None: ...

    @abc.abstractmethod
    async def list_runs(self, flt: RunFilter) -> list[RunInfo]: ...

    @abc.abstractmethod
    async def load_steps(self, run_id: str) -> list[StepRecord]: ...

    @abc.abstractmethod
    async def load_blob(self, digest: str) -> bytes: ...

    @abc.abstractmethod
    async def write_steps(self, run_id: str, owner: str, writes: Sequence[StepWrite]) -> None: ...

    @abc.abstractmethod
    async def take_signal(
        self, run_id: str, owner: str, name: str, write: StepWrite, writes: Sequence[StepWrite]
    ) -> bytes | None:
        """Consume the oldest unconsumed `name` signal and journal `write` with it as output."""

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

        Returns the run as it was before the signal. Raises `SignalRefused` (built by
        `signal_refused`) when the run has ended, and with `only_if_waiting` when the
        run is not WAITING for `name`; the check and the write are one transaction.
        """

    @abc.abstractmethod
    async def claim(
        self,
        owner: str,
        lease_seconds: float,
        limit: int,
        now: float,
        workflows: Iterable[str],
        ids: Iterable[str] | None = None,
    ) -> list[Claimed]: ...

    @abc.abstractmethod
    async def renew(
        self, owner: str, run_ids: Sequence[str], lease_seconds: float, now: float
    ) -> set[str]:
        """Extend leases; return the ids this owner still holds."""

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
        """Park the run WAITING (or PENDING if a signal it waits for already arrived).

        `state_json` is the state so far, so reviewers see it while the run waits.
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
    ) -> None: ...

    @abc.abstractmethod
    async def release_run(
        self, run_id: str, owner: str, writes: Sequence[StepWrite], now: float
    ) -> None:
        """Hand a RUNNING run back to the queue (graceful worker shutdown)."""

    @abc.abstractmethod
    async def cancel_run(self, run_id: str, now: float) -> RunInfo: ...

    @abc.abstractmethod
    async def running_owners(self) -> list[str]:
        """Distinct owners holding RUNNING leases (for dead-worker detection)."""

    @abc.abstractmethod
    async def expire_owner(self, owner: str) -> int:
        """Expire every lease `owner` holds, so other workers take its runs now."""

    @abc.abstractmethod
    async def worker_beat(self, beat: WorkerBeat, *, forget_before: float | None = None) -> None:
        """Insert or refresh a worker's row; with `forget_before`, drop rows of workers
        last seen before then (gone without a clean exit)."""

    @abc.abstractmethod
    async def list_workers(self) -> list[WorkerBeat]:
        """Every worker row, live or not, the most recently seen first."""

    @abc.abstractmethod
    async def remove_worker(self, owner: str) -> None:
        """Delete a worker's row (its clean exit)."""

    @abc.abstractmethod
    async def open_escalation(
        self, run_id: str, owner: str, escalation: Escalation, writes: Sequence[StepWrite]
    ) -> None:
        """Record an escalation (idempotent on its id) with the step entries that go with it."""

    @abc.abstractmethod
    async def list_escalations(
        self,
        status: str | None = None,
        queue: str | None = None,
        limit: int = 100,
        *,
        run_id: str | None = None,
    ) -> list[Escalation]: ...

    @abc.abstractmethod
    async def get_escalation(self, escalation_id: str) -> Escalation | None: ...

    @abc.abstractmethod
    async def resolve_escalation(
        self, escalation_id: str, status: str, resolution: dict[str, Any], by: str, now: float
    ) -> Escalation:
        """Decide an open escalation once and wake its run (signal `escalation:<id>`)."""

    @abc.abstractmethod
    async def spent(
        self,
        run_id: str | None = None,
        workflow: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
    ) -> float:
        """Metered cost in USD matching the filters."""

    @abc.abstractmethod
    async def usage_report(
        self,
        group_by: str,
        workflow: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def cache_get(self, key: str, now: float) -> str | None: ...

    @abc.abstractmethod
    async def cache_put(self, key: str, value: str, expires_at: float | None) -> None: ...

    @abc.abstractmethod
    async def cache_purge(self, now: float) -> int: ...

    @abc.abstractmethod
    async def write_spans(self, rows: Sequence[tuple[Any, ...]]) -> None: ...

    @abc.abstractmethod
    async def load_spans(self, trace_id: str) -> list[tuple[Any, ...]]: ...

    @abc.abstractmethod
    async def span_ids(self, trace_id: str) -> set[str]: ...

    @abc.abstractmethod
    async def purge_spans(self, ended_before_ns: int) -> int: ...

    @abc.abstractmethod
    async def open_review(
        self, review: dict[str, Any], owner: str | None, writes: Sequence[StepWrite], now: float
    ) -> bool: ...

    @abc.abstractmethod
    async def list_reviews(
        self,
        kind: str | None = None,
        status: str | None = None,
        queue: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        *,
        run_id: str | None = None,
        latest_decided: bool = False,  # decided ones only, the latest decision first
    ) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def count_reviews(self, kinds: Sequence[str], status: str, queue: str) -> int:
        """How many requests of these kinds are in `status` in `queue`."""

    @abc.abstractmethod
    async def get_review(self, review_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def decide_review(
        self,
        review_id: str,
        status: str,
        decision: dict[str, Any],
        by: str,
        now: float,
        signal: str | None,
    ) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def requeue_review(
        self, review_id: str, queue: str, deadline: float | None, now: float
    ) -> bool: ...

    @abc.abstractmethod
    async def replace_review(self, old_id: str, review: dict[str, Any], now: float) -> bool: ...

    @abc.abstractmethod
    async def count_sample(self, workflow: str, day: str) -> int: ...

    @abc.abstractmethod
    async def audit_log(
        self, target: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def add_user(self, user: dict[str, Any]) -> None:
        """Add a console user (name, role, token_id, token_hash, groups, created_at, by)."""

    @abc.abstractmethod
    async def get_user(self, name: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def user_by_token_id(self, token_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def list_users(self) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def remove_user(self, name: str, by: str = "cli") -> None:
        """Delete a user and all their sessions at once (audited); unknown -> ConfigError."""

    @abc.abstractmethod
    async def rotate_token(
        self, name: str, token_id: str, token_hash: str, by: str = "cli"
    ) -> None:
        """Replace a user's API token (the old one stops working) and end their sessions."""

    @abc.abstractmethod
    async def create_session(self, session: dict[str, Any]) -> None:
        """Store a console session (id_hash, user, csrf, client, created_at, expires_at)."""

    @abc.abstractmethod
    async def get_session(self, id_hash: str, now: float) -> dict[str, Any] | None:
        """The live session with its user's role and groups; None if unknown, expired
        (expires_at <= now) or its user no longer exists."""

    @abc.abstractmethod
    async def delete_session(self, id_hash: str) -> None: ...

    @abc.abstractmethod
    async def purge_sessions(self, now: float) -> int:
        """Delete expired sessions; return how many."""

    # -- retention (docs/storage.md) -----------------------------------------------------

    @abc.abstractmethod
    async def purge_runs(self, scope: PurgeScope, limit: int = 100) -> Purged:
        """Delete up to `limit` runs of `scope`, oldest ended first, with everything that
        is theirs, in one transaction: steps, signals, spans, requests and escalations,
        usage (folded into per-day totals first), and the blobs no other step refers to.

        Call it until it returns fewer than `limit` runs (`keel.engine.retention.purge`
        does, pausing between batches so workers keep writing). Cheap, and no write
        lock, when nothing matches.
        """

    @abc.abstractmethod
    async def purge_expired(self, scope: PurgeScope, now: float) -> Purged:
        """Delete what expired regardless of runs: response-cache entries past their
        expiry at `now`, and the sampler's counters of days before `scope`'s cutoff."""

    @abc.abstractmethod
    async def count_purge(self, scope: PurgeScope, now: float) -> Purged:
        """What `purge_runs` (to the end) and `purge_expired` would delete; reads only."""

    @abc.abstractmethod
    async def reclaim_space(self, full: bool = False) -> StoreSpace:
        """Give free pages back to the file system where the store allows it cheaply;
        `full` rewrites the whole store (it then shrinks after every purge), holding
        the write lock meanwhile. Returns the space after."""

    @abc.abstractmethod
    async def close(self) -> None: ...


# Signals Keel sends itself when a person decides a review or an escalation.
RESERVED_SIGNALS = ("review:", "escalation:")


def signal_refused(run: RunInfo, name: str, queued: int) -> SignalRefused:
    """Why `run` does not take signal `name` now, and what to do (`queued`: how many
    `name` signals it has not taken yet). Shared by every backend's `send_signal`."""
    data: dict[str, Any] = {
        "run_id": run.id,
        "signal": name,
        "status": run.status.value,
        "waiting_on": list(run.waiting_on) if run.status is RunStatus.WAITING else [],
    }
    if run.status.terminal:
        return SignalRefused(
            f"run {run.id} is already {run.status.value}; signal {name!r} was not delivered"
            " (an ended run takes no signals)",
            **data,
        )
    later = (
        f"or pass queue=True (keel signal --queue) to keep {name!r} for a later"
        f" ctx.wait_for({name!r})"
    )
    if queued:
        return SignalRefused(
            f"run {run.id} has not taken the {name!r} signal sent before ({queued} waiting),"
            f" so this one would only reach a later ctx.wait_for({name!r}): pass queue=True"
            " (keel signal --queue) if the workflow waits for it again",
            queued=queued,
            **data,
        )
    if run.status is not RunStatus.WAITING:
        return SignalRefused(
            f"run {run.id} is {run.status.value}, not waiting for a signal now, so"
            f" {name!r} could not be taken yet: retry once it waits for it, {later}",
            **data,
        )
    signals = [w for w in run.waiting_on if not w.startswith(RESERVED_SIGNALS)]
    people = [w for w in run.waiting_on if w.startswith(RESERVED_SIGNALS)]
    if signals:
        waits = f"it waits for {', '.join(repr(w) for w in signals)}. Send one of those"
    elif people:
        waits = (
            f"it waits for a person's decision ({', '.join(people)}). Decide it with"
            " keel approvals / keel escalations"
        )
    else:
        waits = "it waits for a timer only. Let it run on"
    return SignalRefused(
        f"run {run.id} is not waiting for signal {name!r}: {waits}, {later}",
        **data,
    )
