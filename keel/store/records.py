"""Typed records that cross the store boundary: what callers give a store and what it
returns. No store method takes or returns column-order tuples or row dicts; JSON
payloads (a review's `request`, an audit entry's `detail`) stay dict-valued.

Run, step, escalation and review records live in `keel.types` (every layer uses them);
these are the store's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from keel.errors import ConfigError
from keel.types import RunInfo, RunStatus, StepRecord

# A worker is live while its last heartbeat is younger than this many heartbeat intervals.
LIVE_BEATS = 3
ENDED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
# Cost reports show the usage of purged runs under this name when grouped by run or step.
PURGED_RUNS = "(purged runs)"


@dataclass(frozen=True, slots=True)
class Usage:
    """A model call's metered usage, stored atomically with the step that made it.

    Example:
        Usage(model="gpt-4o-mini", input_tokens=812, output_tokens=64, cost_usd=0.0002)
    """

    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cache_hit: bool = False


@dataclass(slots=True)
class StepWrite:
    """A journal entry to persist, with its output already encoded as JSON.

    Example:
        StepWrite(record, output_json=b'{"ok": true}', usage=Usage("m", 10, 2, 0.0))
    """

    record: StepRecord
    output_json: bytes | None = None
    blob: bytes | None = None  # the out-of-line output when record.blob is set
    usage: Usage | None = None  # metered usage of the step, stored with it atomically


@dataclass(slots=True)
class Claimed:
    """A run a worker just leased (`JournalStore.claim`).

    Example:
        for c in await store.claim("w1", 30.0, 8, ["triage"]): print(c.run.id, c.resumed)
    """

    run: RunInfo
    resumed: bool  # it had run before (recovery, timer or signal)


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
        """Whether its last heartbeat is recent enough at `now`."""
        return now - self.seen_at <= LIVE_BEATS * self.beat_every


@dataclass(slots=True)
class RunFilter:
    """Which runs `list_runs` returns, the newest first.

    Example:
        RunFilter(status=RunStatus.FAILED, workflow="triage", limit=20)
    """

    status: RunStatus | None = None
    workflow: str | None = None
    since: float | None = None  # created_at >= since
    until: float | None = None  # created_at < until
    session: str | None = None  # runs of this session (ctx.session)
    limit: int = 100
    extra: dict[str, Any] = field(default_factory=dict)


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

    Example:
        total = Purged(); total.add(await store.purge_runs(scope))
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
    sessions: int = 0  # expired session values and write receipts (ctx.session)

    def add(self, other: Purged) -> None:
        """Add `other`'s counts to these."""
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

    Example:
        space = await store.reclaim_space(); print(space.free_bytes)
    """

    size_bytes: int  # the file's pages, in use or free
    free_bytes: int  # free pages, reused before the file grows
    shrinks: bool  # purges return freed pages to the file system


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry of the append-only audit log: who did what to which request or user.

    Example:
        [e.action for e in await store.audit_log("rev_1")]  # ["requested", "approved"]
    """

    id: int
    at: float
    actor: str
    action: str  # requested, approved, rejected, escalated, resampled, user_added, ...
    target: str  # a review, escalation or user name
    detail: dict[str, Any] | None = None  # never a payload (see keel.store.base.audit_detail)


@dataclass(frozen=True, slots=True)
class UsageGroup:
    """One row of a cost report (`UsageStore.usage_report`): the usage of one group.

    Example:
        for g in await store.usage_report("model"): print(g.key, g.cost_usd)
    """

    by: str  # what the report groups by: run, workflow, tenant, model or step
    key: str | None  # this group's value of it (None: no tenant, say)
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cache_hits: int

    def as_dict(self) -> dict[str, Any]:
        """The `--json` shape: `{<by>: key, calls, input_tokens, ...}`."""
        return {
            self.by: self.key,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "cache_hits": self.cache_hits,
        }


@dataclass(frozen=True, slots=True)
class User:
    """A review-console user; their API token is stored only as a salted hash.

    Example:
        User("alice", "reviewer", token_id="t1", token_hash="...", groups=("payments",),
             created_at=time.time(), by="cli")
    """

    name: str
    role: str
    token_id: str
    token_hash: str
    groups: tuple[str, ...] = ()
    created_at: float = 0.0
    by: str | None = None  # who added them (audited on add; not stored on the user)


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A console login session; only a hash of the cookie value is stored. `get_session`
    fills `role` and `groups` from its user (they are not stored on the session).

    Example:
        ConsoleSession("h", "alice", csrf="c", client="1.2.3.4", created_at=t,
                       expires_at=t + 3600)
    """

    id_hash: str
    user: str
    csrf: str
    client: str | None
    created_at: float
    expires_at: float
    role: str | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One stored span (keel.observe converts its `SpanRow` to and from it). Ids are
    hex strings; `attributes`, `events` and `links` are JSON text as observe wrote it.

    Example:
        SpanRecord("00f1", "ab12", None, "run_1", "step", "INTERNAL", 1, 2, "OK", None, "{}")
    """

    span_id: str
    trace_id: str
    parent_id: str | None
    run_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int | None
    status: str
    status_message: str | None
    attributes: str
    events: str | None = None
    links: str | None = None


@dataclass(frozen=True, slots=True)
class RekeyCounts:
    """What `rekey` did: values sealed for the first time, moved from an older key, and
    already under the current key.

    Example:
        done = await store.rekey(); print(done.sealed + done.rekeyed)
    """

    sealed: int
    rekeyed: int
    current: int
    key_id: str | None = None  # the key everything is sealed under now
    wal_truncated: bool = False  # the write-ahead log holds no old values any more
    vacuumed: bool = False  # the file was rewritten (free pages dropped)

    def as_dict(self) -> dict[str, Any]:
        """The `--json` shape."""
        return {
            "key_id": self.key_id,
            "sealed": self.sealed,
            "rekeyed": self.rekeyed,
            "current": self.current,
            "wal_truncated": self.wal_truncated,
            "vacuumed": self.vacuumed,
        }


@dataclass(frozen=True, slots=True)
class MemoryRow:
    """One long-term memory as stored (`MemoryStore`): a fact, its validity interval and
    its vector (float32 bytes). `seq` is 0 until the store assigns it.

    Example:
        MemoryRow(id="m1", namespace="u:ada", text="prefers tea", digest=d,
                  embedder="local:all-MiniLM-L6-v2", vector=v.tobytes(), valid_from=now)
    """

    id: str
    namespace: str
    text: str
    digest: str
    embedder: str
    vector: bytes | None
    valid_from: float
    context: str | None = None  # indexed and embedded with the text, never returned
    metadata: dict[str, Any] | None = None
    valid_to: float | None = None  # set when superseded: the fact held until then
    superseded_by: str | None = None
    source: str | None = None  # e.g. "run:<id>" for a memory a workflow wrote
    created_at: float = 0.0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class KeywordHit:
    """A full-text candidate: the memory's `seq` and its keyword score (higher is a
    better match; comparable within one query only).

    Example:
        best = max(await store.memory_keyword("default", ["tea"], None, 50), key=lambda h: h.score)
    """

    seq: int
    score: float


@dataclass(frozen=True, slots=True)
class MemoryExtract:
    """What became of one item extracted from a finished run (`memory_extracts`).

    Example:
        MemoryExtract("run_1", 0, "u:ada", "prefers tea", "added", memory_id="m9")
    """

    run_id: str
    item: int
    namespace: str
    text: str
    status: str  # e.g. pending, added, duplicate, rejected, failed
    reason: str | None = None
    memory_id: str | None = None
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class MemoryNamespace:
    """A namespace of long-term memory and what it holds (`memory_namespaces`).

    Example:
        MemoryNamespace("user:ada", current=12, superseded=3, last_added=1.7e9)
    """

    namespace: str
    current: int  # facts valid now
    superseded: int  # closed by a newer fact, kept for `as_of` searches
    last_added: float  # when its newest memory was written (epoch seconds)
