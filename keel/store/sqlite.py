"""SQLite backend: the zero-setup default.

Settings: WAL journal, synchronous=NORMAL (every commit survives a process
kill; only an OS crash or power loss can drop the last commits), busy timeout
for several worker processes on one file, and BEGIN IMMEDIATE for every write
so a lease check and the write it guards are one atomic unit.

Calls are synchronous under an async signature: each is a single short
transaction, cheaper than a hop to a thread.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pydantic_core

from keel.engine.journal import live_degraded, superseded_attempts
from keel.engine.serde import from_json
from keel.errors import ConfigError, LeaseLost, RunNotFound
from keel.store import _sqlite_file
from keel.store.base import (
    PURGED_RUNS,
    Claimed,
    Purged,
    PurgeScope,
    RunFilter,
    StepWrite,
    Store,
    StoreSpace,
    WorkerBeat,
    audit_detail,
    signal_refused,
)
from keel.types import (
    Escalation,
    EscalationPacket,
    RunInfo,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    StructuredError,
)

_SCHEMA_VERSION = 14
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    result TEXT,
    error TEXT,
    state TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ended_at REAL,
    wake_at REAL,
    waiting_on TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires REAL
);
CREATE INDEX IF NOT EXISTS runs_ready ON runs(status, wake_at);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    scope TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    wake_at REAL,
    state_delta TEXT,
    blob TEXT,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    consumed_by TEXT
);
CREATE INDEX IF NOT EXISTS signals_pending ON signals(run_id, name) WHERE consumed_by IS NULL;
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
) WITHOUT ROWID;
"""

# Each entry upgrades the schema by one version; a fresh store runs them all in order.
_MIGRATIONS = {
    2: """
ALTER TABLE steps ADD COLUMN fallback TEXT;
CREATE TABLE IF NOT EXISTS escalations (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    packet TEXT NOT NULL,
    resolution TEXT,
    created_at REAL NOT NULL,
    resolved_at REAL,
    resolved_by TEXT
);
CREATE INDEX IF NOT EXISTS escalations_by_status ON escalations(status, created_at);
""",
    3: """
ALTER TABLE runs ADD COLUMN tenant TEXT;
CREATE TABLE IF NOT EXISTS usage (
    run_id TEXT NOT NULL,
    step_key TEXT NOT NULL,
    workflow TEXT NOT NULL,
    tenant TEXT,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    cache_hit INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, step_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_by_workflow ON usage(workflow, created_at);
CREATE INDEX IF NOT EXISTS usage_by_tenant ON usage(tenant, created_at);
CREATE TABLE IF NOT EXISTS kv_cache (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
""",
    4: """
CREATE TABLE IF NOT EXISTS spans (
    span_id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    parent_id TEXT,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    status TEXT NOT NULL,
    status_message TEXT,
    attributes TEXT NOT NULL,
    events TEXT,
    links TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spans_by_trace ON spans(trace_id, start_ns);
CREATE INDEX IF NOT EXISTS spans_by_end ON spans(end_ns);
""",
    5: """
CREATE TABLE IF NOT EXISTS reviews (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    run_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    step TEXT,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    decision TEXT,
    deadline REAL,
    created_at REAL NOT NULL,
    decided_at REAL,
    decided_by TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reviews_open ON reviews(kind, status, queue, created_at);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit(target, id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS sample_counts (
    workflow TEXT NOT NULL,
    day TEXT NOT NULL,
    seen INTEGER NOT NULL,
    PRIMARY KEY (workflow, day)
) WITHOUT ROWID;
""",
    # Spans clustered by trace: a run's spans share pages instead of landing on random
    # ones (a span id is a hash), which halves the bytes written per span.
    6: """
CREATE TABLE spans_by_trace_v6 (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    status TEXT NOT NULL,
    status_message TEXT,
    attributes TEXT NOT NULL,
    events TEXT,
    links TEXT,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
INSERT INTO spans_by_trace_v6 SELECT trace_id, span_id, parent_id, run_id, name, kind,
    start_ns, end_ns, status, status_message, attributes, events, links FROM spans;
DROP TABLE spans;
ALTER TABLE spans_by_trace_v6 RENAME TO spans;
CREATE INDEX IF NOT EXISTS spans_by_end ON spans(end_ns);
""",
    # What a tool step was called with, and its failed attempts: traces are built from
    # the journal itself, so it keeps what a trace needs.
    7: """
ALTER TABLE steps ADD COLUMN input TEXT;
ALTER TABLE steps ADD COLUMN attempt_log TEXT;
""",
    # Budget checks sum today's cost per workflow / tenant: covering indexes answer them
    # from the index alone.
    8: """
DROP INDEX IF EXISTS usage_by_workflow;
DROP INDEX IF EXISTS usage_by_tenant;
CREATE INDEX IF NOT EXISTS usage_wf_cost ON usage(workflow, created_at, cost_usd);
CREATE INDEX IF NOT EXISTS usage_tenant_cost ON usage(tenant, created_at, cost_usd);
""",
    # Review-console users: API tokens are stored only as salted hashes.
    9: """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    token_id TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL,
    groups TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
""",
    # Review-console login sessions: only a hash of the cookie value is kept.
    10: """
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    csrf TEXT NOT NULL,
    client TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions(expires_at);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions(user);
""",
    # The console finds a run's requests, and the latest decisions, without scanning.
    11: """
CREATE INDEX IF NOT EXISTS reviews_by_run ON reviews(run_id);
CREATE INDEX IF NOT EXISTS reviews_by_decision ON reviews(decided_at);
CREATE INDEX IF NOT EXISTS escalations_by_run ON escalations(run_id);
""",
    # Running cost totals per workflow and tenant per UTC day: budget checks read one
    # row instead of summing the day's usage on every model call.
    12: """
CREATE TABLE IF NOT EXISTS usage_daily (
    scope TEXT NOT NULL,
    day REAL NOT NULL,
    cost_usd REAL NOT NULL,
    PRIMARY KEY (scope, day)
) WITHOUT ROWID;
INSERT OR REPLACE INTO usage_daily (scope, day, cost_usd)
    SELECT 'wf:' || workflow, CAST(created_at / 86400 AS INTEGER) * 86400, SUM(cost_usd)
    FROM usage GROUP BY 1, 2;
INSERT OR REPLACE INTO usage_daily (scope, day, cost_usd)
    SELECT 'tenant:' || tenant, CAST(created_at / 86400 AS INTEGER) * 86400, SUM(cost_usd)
    FROM usage WHERE tenant IS NOT NULL GROUP BY 1, 2;
""",
    # Worker heartbeats: which workers are live, and which workflows they serve.
    13: """
CREATE TABLE IF NOT EXISTS workers (
    owner TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    workflows TEXT NOT NULL,
    embedded INTEGER NOT NULL,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL,
    beat_every REAL NOT NULL
) WITHOUT ROWID;
""",
    # Retention (docs/storage.md): purges find ended runs, expired cache entries, a run's
    # signals and spans, and the steps sharing a blob by index; purged runs' usage is
    # kept as per-day totals; the audit log keeps no payload, so what earlier versions
    # logged of decisions (arguments, outputs, notes) becomes the names of its fields,
    # overwritten in place (secure_delete: left on for the connection that upgrades, as
    # most builds have it).
    14: """
CREATE INDEX IF NOT EXISTS runs_ended ON runs(ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS steps_by_blob ON steps(blob) WHERE blob IS NOT NULL;
CREATE INDEX IF NOT EXISTS signals_by_run ON signals(run_id);
CREATE INDEX IF NOT EXISTS spans_by_run ON spans(run_id);
CREATE INDEX IF NOT EXISTS kv_cache_expiry ON kv_cache(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS usage_rollup (
    day REAL NOT NULL,
    workflow TEXT NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    cache_hits INTEGER NOT NULL,
    PRIMARY KEY (day, workflow, tenant, model)
) WITHOUT ROWID;
PRAGMA secure_delete=1;
DROP TRIGGER IF EXISTS audit_no_update;
UPDATE audit SET detail = json_object(
    'fields', (SELECT json_group_array(key) FROM
        (SELECT key FROM json_each(audit.detail) WHERE type != 'null' ORDER BY key)),
    'scrubbed', json('true'))
WHERE json_valid(detail) AND json_type(detail) = 'object' AND (
    json_type(detail, '$.args') IS NOT NULL OR json_type(detail, '$.original') IS NOT NULL
    OR json_type(detail, '$.output') IS NOT NULL OR json_type(detail, '$.label') IS NOT NULL
    OR json_type(detail, '$.note') IS NOT NULL OR json_type(detail, '$.reason') IS NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
""",
}

# Ready runs read in one go when a worker watches ids; a longer list means a backlog.
_SCAN = 1000


# A span the next execution reconstructed for one whose worker died (keel.observe).
_RECONSTRUCTED = "coalesce(json_extract({}.attributes, '$.\"keel.execution.interrupted\"'), 0)"
_RUN_COLS = (
    "id, workflow, status, input, result, error, state, created_at, updated_at, ended_at, "
    "wake_at, waiting_on, attempts, lease_owner,"
    # degraded steps and phase attempts (1), which tell which attempts were thrown away
    " (SELECT json_group_array(json_array(s.key, s.kind = 'phase')) FROM steps s"
    "  WHERE s.run_id = runs.id AND (s.fallback = 'degrade' OR s.kind = 'phase')), tenant"
)
_STEP_COLS = (
    "run_id, key, scope, position, kind, name, digest, status, output, error, attempts, "
    "started_at, ended_at, wake_at, state_delta, blob, fallback, input, attempt_log"
)
_ESC_COLS = (
    "id, run_id, workflow, queue, kind, step, status, packet, resolution, created_at,"
    " resolved_at, resolved_by"
)
_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def _path_from_url(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ConfigError(
            f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = url[len("sqlite:///") :]
    if not path:
        raise ConfigError(f"bad SQLite URL {url!r}: no file path after sqlite:///")
    return path


def _loads(text: str | None) -> Any:
    return None if text is None else from_json(text)


def _upgrade_script(version: int) -> str:
    """One transaction that brings a store at `version` (0: new) to `_SCHEMA_VERSION`."""
    script = _SCHEMA if version == 0 else ""
    for v in range(max(version, 1) + 1, _SCHEMA_VERSION + 1):
        script += _MIGRATIONS[v]
    # A new store gives the pages purges free back to the file system (only settable
    # before its first table; older stores switch with `keel runs purge --vacuum`).
    vacuum = "PRAGMA auto_vacuum=INCREMENTAL;" if version == 0 else ""
    return f"{vacuum}BEGIN IMMEDIATE;{script}PRAGMA user_version={_SCHEMA_VERSION};COMMIT;"


def _err(text: str | None) -> StructuredError | None:
    return None if text is None else StructuredError.model_validate_json(text)


def _run(row: tuple[Any, ...]) -> RunInfo:
    return RunInfo(
        id=row[0],
        workflow=row[1],
        status=RunStatus(row[2]),
        input=_loads(row[3]) or {},
        result=_loads(row[4]),
        error=_err(row[5]),
        state=_loads(row[6]),
        created_at=row[7],
        updated_at=row[8],
        ended_at=row[9],
        wake_at=row[10],
        waiting_on=_loads(row[11]) or [],
        attempts=row[12],
        lease_owner=row[13],
        degraded=_degraded(_loads(row[14]) or []),
        tenant=row[15],
    )


def _count_daily(
    db: sqlite3.Connection, run_id: str, step_key: str, cost: float, at: float
) -> None:
    """Keep `usage_daily` in step with a usage row about to be written (or rewritten)."""
    old = db.execute(
        "SELECT u.workflow, u.tenant, u.cost_usd, u.created_at FROM usage u"
        " WHERE u.run_id=? AND u.step_key=?",
        (run_id, step_key),
    ).fetchone()
    changes: list[tuple[str | None, str | None, float, float]] = []
    if old is not None:
        changes.append((old[0], old[1], -old[2], old[3]))
    if cost:
        run = db.execute("SELECT workflow, tenant FROM runs WHERE id=?", (run_id,)).fetchone()
        if run is not None:
            changes.append((run[0], run[1], cost, at))
    for workflow, tenant, amount, when in changes:
        if not amount:
            continue
        day = int(when // 86400) * 86400
        for scope in (f"wf:{workflow}", f"tenant:{tenant}" if tenant is not None else None):
            if scope is not None:
                db.execute(
                    "INSERT INTO usage_daily (scope, day, cost_usd) VALUES (?, ?, ?) ON CONFLICT"
                    " (scope, day) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd",
                    (scope, day, amount),
                )


def _degraded(pairs: list[list[Any]]) -> list[str]:
    attempts = [k for k, phase in pairs if phase]
    degraded = [k for k, phase in pairs if not phase]
    if not attempts:
        return sorted(degraded)
    return live_degraded(degraded, superseded_attempts(attempts, degraded))


def _step(row: tuple[Any, ...]) -> StepRecord:
    return StepRecord(
        run_id=row[0],
        key=row[1],
        scope=row[2],
        position=row[3],
        kind=StepKind(row[4]),
        name=row[5],
        digest=row[6],
        status=StepStatus(row[7]),
        output=_loads(row[8]),
        error=_err(row[9]),
        attempts=row[10],
        started_at=row[11],
        ended_at=row[12],
        wake_at=row[13],
        state_delta=_loads(row[14]),
        blob=row[15],
        fallback=row[16],
        input=_loads(row[17]),
        attempt_log=_loads(row[18]),
    )


def _escalation(row: tuple[Any, ...]) -> Escalation:
    return Escalation(
        id=row[0],
        run_id=row[1],
        workflow=row[2],
        queue=row[3],
        kind=row[4],
        step=row[5],
        status=row[6],
        packet=EscalationPacket.model_validate_json(row[7]),
        resolution=_loads(row[8]),
        created_at=row[9],
        resolved_at=row[10],
        resolved_by=row[11],
    )


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode()


class SQLiteStore(Store):
    """The embedded store: one SQLite file shared by any number of local processes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = _path_from_url(url)
        if self.path != ":memory:":
            _sqlite_file.prepare(self.path, _upgrade_script(0))
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except sqlite3.Error as exc:
            raise _sqlite_file.fault(self.path, exc) from None
        try:
            self._wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA temp_store=MEMORY")
            self._migrate()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error) and _sqlite_file.is_fault(exc):
                raise _sqlite_file.fault(self.path, exc) from None
            raise

    def _wal(self) -> None:
        # Switching a new file to WAL takes an exclusive lock that SQLite reports as
        # "locked" at once (no busy wait) when several workers start together.
        for pause in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 0.0):
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or not pause:
                    raise
                time.sleep(pause)

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > _SCHEMA_VERSION:
            raise ConfigError(
                f"store {self.path!r} has schema v{version}, newer than this Keel "
                f"(v{_SCHEMA_VERSION}); upgrade Keel"
            )
        if version < _SCHEMA_VERSION:
            # executescript manages its own transaction; keep the whole upgrade in one.
            try:
                self._db.executescript(_upgrade_script(version))
            except sqlite3.OperationalError:
                # Another process (workers starting together on a new store) may have
                # upgraded it between our version check and our lock: then we are done.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                (now,) = self._db.execute("PRAGMA user_version").fetchone()
                if now < _SCHEMA_VERSION:
                    raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk does), and a failed COMMIT
            # leaves the transaction open: end it either way, keeping the first error.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    # -- runs ---------------------------------------------------------------

    async def create_run(
        self, run_id: str, workflow: str, input_json: bytes, now: float, tenant: str | None = None
    ) -> tuple[RunInfo, bool]:
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO runs"
                " (id, workflow, status, input, created_at, updated_at, tenant)"
                " VALUES (?, ?, 'PENDING', ?, ?, ?, ?)",
                (run_id, workflow, input_json.decode(), now, now, tenant),
            )
            created = cur.rowcount == 1
            row = db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
        return _run(row), created

    async def get_run(self, run_id: str) -> RunInfo | None:
        row = self._db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
        return _run(row) if row else None

    async def list_runs(self, flt: RunFilter) -> list[RunInfo]:
        where: list[str] = []
        args: list[Any] = []
        if flt.status:
            where.append("status=?")
            args.append(flt.status.value)
        if flt.workflow:
            where.append("workflow=?")
            args.append(flt.workflow)
        if flt.since is not None:
            where.append("created_at>=?")
            args.append(flt.since)
        if flt.until is not None:
            where.append("created_at<?")
            args.append(flt.until)
        sql = f"SELECT {_RUN_COLS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        rows = self._db.execute(sql, (*args, flt.limit)).fetchall()
        return [_run(r) for r in rows]

    async def cancel_run(self, run_id: str, now: float) -> RunInfo:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status='CANCELLED', ended_at=?, updated_at=?, lease_owner=NULL,"
                " lease_expires=NULL, wake_at=NULL WHERE id=? AND status NOT IN (?, ?, ?)",
                (now, now, run_id, *_TERMINAL),
            )
            row = db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.url}", run_id=run_id)
        return _run(row)

    # -- journal --------------------------------------------------------------

    async def load_steps(self, run_id: str) -> list[StepRecord]:
        rows = self._db.execute(
            f"SELECT {_STEP_COLS} FROM steps WHERE run_id=?", (run_id,)
        ).fetchall()
        return [_step(r) for r in rows]

    async def load_blob(self, digest: str) -> bytes:
        row = self._db.execute("SELECT data FROM blobs WHERE digest=?", (digest,)).fetchone()
        if row is None:
            raise RunNotFound(f"out-of-line output {digest} is missing from {self.url}")
        return bytes(row[0])

    def _check_owner(self, db: sqlite3.Connection, run_id: str, owner: str) -> None:
        row = db.execute("SELECT lease_owner, status FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None or row[0] != owner or row[1] != "RUNNING":
            status = row[1] if row else "missing"
            raise LeaseLost(
                f"run {run_id} is no longer owned by this worker (status {status})",
                run_id=run_id,
                status=status,
            )

    @staticmethod
    def _insert(db: sqlite3.Connection, writes: Sequence[StepWrite]) -> None:
        for w in writes:
            r = w.record
            if w.meter is not None:
                m = w.meter
                _count_daily(db, r.run_id, r.key, m["cost_usd"], r.ended_at or r.started_at)
                db.execute(
                    "INSERT OR REPLACE INTO usage (run_id, step_key, workflow, tenant, model,"
                    " input_tokens, output_tokens, cost_usd, cache_hit, created_at)"
                    " SELECT ?, ?, workflow, tenant, ?, ?, ?, ?, ?, ? FROM runs WHERE id=?",
                    (
                        r.run_id,
                        r.key,
                        m["model"],
                        m["input_tokens"],
                        m["output_tokens"],
                        m["cost_usd"],
                        int(bool(m.get("cache_hit"))),
                        r.ended_at or r.started_at,
                        r.run_id,
                    ),
                )
            if w.blob is not None and r.blob:
                db.execute(
                    "INSERT OR IGNORE INTO blobs (digest, size, data) VALUES (?, ?, ?)",
                    (r.blob, len(w.blob), w.blob),
                )
            db.execute(
                f"INSERT OR REPLACE INTO steps ({_STEP_COLS}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.run_id,
                    r.key,
                    r.scope,
                    r.position,
                    r.kind.value,
                    r.name,
                    r.digest,
                    r.status.value,
                    _text(w.output_json),
                    r.error.model_dump_json(exclude_none=True) if r.error else None,
                    r.attempts,
                    r.started_at,
                    r.ended_at,
                    r.wake_at,
                    _text(pydantic_core.to_json(r.state_delta)) if r.state_delta else None,
                    r.blob,
                    r.fallback,
                    _text(pydantic_core.to_json(r.input, fallback=repr))
                    if r.input is not None
                    else None,
                    _text(pydantic_core.to_json(r.attempt_log)) if r.attempt_log else None,
                ),
            )

    async def write_steps(self, run_id: str, owner: str, writes: Sequence[StepWrite]) -> None:
        with self._tx() as db:
            self._check_owner(db, run_id, owner)
            self._insert(db, writes)

    async def take_signal(
        self, run_id: str, owner: str, name: str, write: StepWrite, writes: Sequence[StepWrite]
    ) -> bytes | None:
        with self._tx() as db:
            self._check_owner(db, run_id, owner)
            row = db.execute(
                "SELECT id, payload FROM signals WHERE run_id=? AND name=? AND consumed_by IS NULL"
                " ORDER BY id LIMIT 1",
                (run_id, name),
            ).fetchone()
            if row is None:
                self._insert(db, writes)
                return None
            db.execute("UPDATE signals SET consumed_by=? WHERE id=?", (write.record.key, row[0]))
            payload: bytes = row[1].encode()
            write.output_json = payload
            self._insert(db, [*writes, write])
        return payload

    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload_json: bytes,
        now: float,
        *,
        only_if_waiting: bool = False,
    ) -> RunInfo:
        with self._tx() as db:
            row = db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in {self.url}", run_id=run_id)
            run = _run(row)
            waited = run.status is RunStatus.WAITING and name in run.waiting_on
            if run.status.terminal or (only_if_waiting and not waited):
                (queued,) = db.execute(
                    "SELECT COUNT(*) FROM signals WHERE run_id=? AND name=?"
                    " AND consumed_by IS NULL",
                    (run_id, name),
                ).fetchone()
                raise signal_refused(run, name, queued)
            self._deliver(db, run, name, payload_json, now)
        return run

    @staticmethod
    def _deliver(
        db: sqlite3.Connection, run: RunInfo, name: str, payload_json: bytes, now: float
    ) -> None:
        db.execute(
            "INSERT INTO signals (run_id, name, payload, created_at) VALUES (?, ?, ?, ?)",
            (run.id, name, payload_json.decode(), now),
        )
        if run.status is RunStatus.WAITING and name in run.waiting_on:
            db.execute(
                "UPDATE runs SET status='PENDING', updated_at=? WHERE id=? AND status='WAITING'",
                (now, run.id),
            )

    # -- escalations ----------------------------------------------------------

    async def open_escalation(
        self, run_id: str, owner: str, escalation: Escalation, writes: Sequence[StepWrite]
    ) -> None:
        e = escalation
        with self._tx() as db:
            self._check_owner(db, run_id, owner)
            db.execute(
                f"INSERT OR IGNORE INTO escalations ({_ESC_COLS}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, NULL)",
                (
                    e.id,
                    e.run_id,
                    e.workflow,
                    e.queue,
                    e.kind,
                    e.step,
                    e.status,
                    e.packet.model_dump_json(),
                    e.created_at,
                ),
            )
            self._insert(db, writes)

    async def list_escalations(
        self,
        status: str | None = None,
        queue: str | None = None,
        limit: int = 100,
        *,
        run_id: str | None = None,
    ) -> list[Escalation]:
        where: list[str] = []
        args: list[Any] = []
        for col, val in (("status", status), ("queue", queue), ("run_id", run_id)):
            if val:
                where.append(f"{col}=?")
                args.append(val)
        sql = f"SELECT {_ESC_COLS} FROM escalations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC LIMIT ?"
        return [_escalation(r) for r in self._db.execute(sql, (*args, limit)).fetchall()]

    async def get_escalation(self, escalation_id: str) -> Escalation | None:
        row = self._db.execute(
            f"SELECT {_ESC_COLS} FROM escalations WHERE id=?", (escalation_id,)
        ).fetchone()
        return _escalation(row) if row else None

    async def resolve_escalation(
        self, escalation_id: str, status: str, resolution: dict[str, Any], by: str, now: float
    ) -> Escalation:
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_ESC_COLS} FROM escalations WHERE id=?", (escalation_id,)
            ).fetchone()
            if row is None:
                raise RunNotFound(f"no escalation {escalation_id!r} in {self.url}")
            esc = _escalation(row)
            if esc.status != "open":
                raise ConfigError(
                    f"escalation {escalation_id} was already {esc.status} by "
                    f"{esc.resolved_by or 'someone'}; a decision is final"
                )
            payload = pydantic_core.to_json({"status": status, **resolution, "by": by})
            db.execute(
                "UPDATE escalations SET status=?, resolution=?, resolved_at=?, resolved_by=?"
                " WHERE id=?",
                (status, payload.decode(), now, by, escalation_id),
            )
            run_row = db.execute(
                f"SELECT {_RUN_COLS} FROM runs WHERE id=?", (esc.run_id,)
            ).fetchone()
            if run_row is not None and not _run(run_row).status.terminal:
                self._deliver(db, _run(run_row), f"escalation:{escalation_id}", payload, now)
        return esc.model_copy(
            update={
                "status": status,
                "resolution": _loads(payload.decode()),
                "resolved_at": now,
                "resolved_by": by,
            }
        )

    # -- queue and leases -----------------------------------------------------

    async def claim(
        self,
        owner: str,
        lease_seconds: float,
        limit: int,
        now: float,
        workflows: Iterable[str],
        ids: Iterable[str] | None = None,
    ) -> list[Claimed]:
        names = list(workflows)
        if not names or limit <= 0:
            return []
        ready = self._ready(now, names, None, limit if ids is None else _SCAN)
        if ids is not None:
            wanted = set(ids)
            if len(ready) < _SCAN:  # every ready run was seen: keep the watched ones
                ready = [i for i in ready if i in wanted][:limit]
            else:  # a backlog not ours: ask by id instead (chunked under SQLite's limit)
                id_list, ready = list(wanted), []
                for i in range(0, len(id_list), 500):
                    ready += self._ready(now, names, id_list[i : i + 500], limit - len(ready))
                    if len(ready) >= limit:
                        break
        if not ready:
            return []  # nothing to do: no write lock taken
        return self._claim(owner, lease_seconds, now, ready)

    _READY = (
        "(status='PENDING' OR (status='WAITING' AND wake_at<=:now)"
        " OR (status='RUNNING' AND lease_expires<:now))"
    )

    def _ready(self, now: float, names: list[str], ids: list[str] | None, limit: int) -> list[str]:
        """Claimable run ids, oldest first, read without a write lock (WAL readers don't wait)."""
        params: dict[str, Any] = {"now": now, "limit": limit}
        wf = ",".join(f":w{i}" for i in range(len(names)))
        params.update({f"w{i}": n for i, n in enumerate(names)})
        sql = f"SELECT id FROM runs WHERE {self._READY} AND workflow IN ({wf})"
        if ids is not None:
            sql += " AND id IN (" + ",".join(f":i{i}" for i in range(len(ids))) + ")"
            params.update({f"i{i}": v for i, v in enumerate(ids)})
        sql += " ORDER BY created_at LIMIT :limit"
        return [r[0] for r in self._db.execute(sql, params).fetchall()]

    def _claim(
        self, owner: str, lease_seconds: float, now: float, run_ids: list[str]
    ) -> list[Claimed]:
        # Still ready? Another worker may have claimed some since they were read.
        params: dict[str, Any] = {"now": now, "owner": owner, "exp": now + lease_seconds}
        params.update({f"i{i}": v for i, v in enumerate(run_ids)})
        marks = ",".join(f":i{i}" for i in range(len(run_ids)))
        with self._tx() as db:
            rows = db.execute(
                f"UPDATE runs SET status='RUNNING', lease_owner=:owner, lease_expires=:exp,"
                f" attempts=attempts+1, updated_at=:now, wake_at=NULL"
                f" WHERE id IN ({marks}) AND {self._READY}"
                f" RETURNING {_RUN_COLS}",
                params,
            ).fetchall()
        claimed = [Claimed(run=_run(r), resumed=r[12] > 1) for r in rows]
        order = {run_id: i for i, run_id in enumerate(run_ids)}
        return sorted(claimed, key=lambda c: order[c.run.id])

    async def renew(
        self, owner: str, run_ids: Sequence[str], lease_seconds: float, now: float
    ) -> set[str]:
        if not run_ids:
            return set()
        held: set[str] = set()
        with self._tx() as db:
            for i in range(0, len(run_ids), 900):
                chunk = list(run_ids[i : i + 900])
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"UPDATE runs SET lease_expires=? WHERE lease_owner=? AND status='RUNNING'"
                    f" AND id IN ({marks}) RETURNING id",
                    (now + lease_seconds, owner, *chunk),
                ).fetchall()
                held.update(r[0] for r in rows)
        return held

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
        with self._tx() as db:
            self._check_owner(db, run_id, owner)
            self._insert(db, writes)
            status = RunStatus.WAITING
            if waiting_on:
                marks = ",".join("?" * len(waiting_on))
                hit = db.execute(
                    f"SELECT 1 FROM signals WHERE run_id=? AND consumed_by IS NULL"
                    f" AND name IN ({marks}) LIMIT 1",
                    (run_id, *waiting_on),
                ).fetchone()
                if hit:  # the signal raced the suspension: run again now
                    status = RunStatus.PENDING
            db.execute(
                "UPDATE runs SET status=?, wake_at=?, waiting_on=?, lease_owner=NULL,"
                " lease_expires=NULL, updated_at=?, state=COALESCE(?, state) WHERE id=?",
                (
                    status.value,
                    wake_at,
                    pydantic_core.to_json(sorted(waiting_on)).decode() if waiting_on else None,
                    now,
                    _text(state_json),
                    run_id,
                ),
            )
        return status

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
        with self._tx() as db:
            self._check_owner(db, run_id, owner)
            self._insert(db, writes)
            db.execute(
                "UPDATE runs SET status=?, result=?, error=?, state=?, ended_at=?, updated_at=?,"
                " lease_owner=NULL, lease_expires=NULL, wake_at=NULL, waiting_on=NULL WHERE id=?",
                (
                    status.value,
                    _text(result_json),
                    error.model_dump_json(exclude_none=True) if error else None,
                    _text(state_json),
                    now,
                    now,
                    run_id,
                ),
            )

    async def release_run(
        self, run_id: str, owner: str, writes: Sequence[StepWrite], now: float
    ) -> None:
        with self._tx() as db:
            try:
                self._check_owner(db, run_id, owner)
            except LeaseLost:
                return
            self._insert(db, writes)
            db.execute(
                "UPDATE runs SET status='PENDING', lease_owner=NULL, lease_expires=NULL,"
                " updated_at=? WHERE id=? AND lease_owner=? AND status='RUNNING'",
                (now, run_id, owner),
            )

    # -- metering and cache ---------------------------------------------------

    async def spent(
        self,
        run_id: str | None = None,
        workflow: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
    ) -> float:
        if run_id is None and since is not None and since % 86400 == 0:
            scope = f"wf:{workflow}" if tenant is None else f"tenant:{tenant}"
            if (workflow is None) != (tenant is None):  # one whole-days total: kept running
                row = self._db.execute(
                    "SELECT COALESCE(SUM(cost_usd), 0) FROM usage_daily WHERE scope=? AND day>=?",
                    (scope, since),
                )
                return float(row.fetchone()[0])
        where, args = self._usage_filter(run_id, workflow, tenant, since)
        row = self._db.execute(f"SELECT COALESCE(SUM(cost_usd), 0) FROM usage{where}", args)
        return float(row.fetchone()[0])

    async def usage_report(
        self,
        group_by: str,
        workflow: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        column = {
            "run": "run_id",
            "workflow": "workflow",
            "tenant": "tenant",
            "model": "model",
            "step": "run_id || ':' || step_key",
        }.get(group_by)
        if column is None:
            raise ConfigError(
                f"cannot group costs by {group_by!r}; use run, workflow, tenant, model or step"
            )
        where, args = self._usage_filter(None, workflow, tenant, since)
        rows = self._db.execute(
            f"SELECT {column}, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost_usd),"
            f" SUM(cache_hit) FROM usage{where} GROUP BY 1 ORDER BY 5 DESC",
            args,
        ).fetchall()
        rows = self._with_rollup(rows, group_by, workflow, tenant, since)
        return [
            {
                group_by: r[0],
                "calls": r[1],
                "input_tokens": r[2],
                "output_tokens": r[3],
                "cost_usd": r[4],
                "cache_hits": r[5],
            }
            for r in rows
        ]

    @staticmethod
    def _usage_filter(
        run_id: str | None, workflow: str | None, tenant: str | None, since: float | None
    ) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        for col, val in (("run_id", run_id), ("workflow", workflow), ("tenant", tenant)):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        if since is not None:
            where.append("created_at>=?")
            args.append(since)
        return (" WHERE " + " AND ".join(where) if where else ""), args

    async def cache_get(self, key: str, now: float) -> str | None:
        row = self._db.execute(
            "SELECT value FROM kv_cache WHERE key=? AND (expires_at IS NULL OR expires_at>?)",
            (key, now),
        ).fetchone()
        return row[0] if row else None

    async def cache_put(self, key: str, value: str, expires_at: float | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO kv_cache (key, value, expires_at) VALUES (?, ?, ?)",
                (key, value, expires_at),
            )

    async def cache_purge(self, now: float) -> int:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM kv_cache WHERE expires_at IS NOT NULL AND expires_at<=?", (now,)
            )
        return cur.rowcount

    # -- reviews (approvals, low confidence, novelty, samples) and the audit log ----

    _REVIEW_COLS = (
        "id, kind, run_id, workflow, step, queue, status, request, decision, deadline,"
        " created_at, decided_at, decided_by"
    )

    @staticmethod
    def _review(row: tuple[Any, ...]) -> dict[str, Any]:
        keys = (
            "id",
            "kind",
            "run_id",
            "workflow",
            "step",
            "queue",
            "status",
            "request",
            "decision",
            "deadline",
            "created_at",
            "decided_at",
            "decided_by",
        )
        out = dict(zip(keys, row, strict=True))
        out["request"] = _loads(out["request"])
        out["decision"] = _loads(out["decision"])
        return out

    @staticmethod
    def _audit(
        db: sqlite3.Connection, actor: str, action: str, target: str, detail: Any, now: float
    ) -> None:
        db.execute(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (now, actor, action, target, _text(pydantic_core.to_json(detail))),
        )

    def _insert_review(self, db: sqlite3.Connection, review: dict[str, Any], now: float) -> bool:
        cur = db.execute(
            f"INSERT OR IGNORE INTO reviews ({self._REVIEW_COLS}) VALUES"
            " (?, ?, ?, ?, ?, ?, 'pending', ?, NULL, ?, ?, NULL, NULL)",
            (
                review["id"],
                review["kind"],
                review["run_id"],
                review["workflow"],
                review.get("step"),
                review["queue"],
                pydantic_core.to_json(review["request"]).decode(),
                review.get("deadline"),
                now,
            ),
        )
        return cur.rowcount == 1

    async def open_review(
        self, review: dict[str, Any], owner: str | None, writes: Sequence[StepWrite], now: float
    ) -> bool:
        """Insert a pending review (idempotent on id) with its journal entries; True if new."""
        with self._tx() as db:
            if owner is not None:
                self._check_owner(db, review["run_id"], owner)
            created = self._insert_review(db, review, now)
            if created:
                self._audit(
                    db,
                    "keel",
                    "requested",
                    review["id"],
                    {"kind": review["kind"], "queue": review["queue"]},
                    now,
                )
            self._insert(db, writes)
        return created

    async def list_reviews(
        self,
        kind: str | None = None,
        status: str | None = None,
        queue: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        *,
        run_id: str | None = None,
        latest_decided: bool = False,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        for col, val in (
            ("kind", kind),
            ("status", status),
            ("queue", queue),
            ("workflow", workflow),
            ("run_id", run_id),
        ):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        if latest_decided:
            where.append("decided_at IS NOT NULL")
        sql = f"SELECT {self._REVIEW_COLS} FROM reviews"
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "decided_at DESC, id" if latest_decided else "created_at, id"
        sql += f" ORDER BY {order} LIMIT ?"
        return [self._review(r) for r in self._db.execute(sql, (*args, limit)).fetchall()]

    async def count_reviews(self, kinds: Sequence[str], status: str, queue: str) -> int:
        marks = ",".join("?" for _ in kinds)
        row = self._db.execute(
            f"SELECT COUNT(*) FROM reviews WHERE kind IN ({marks}) AND status=? AND queue=?",
            (*kinds, status, queue),
        ).fetchone()
        return int(row[0])

    async def get_review(self, review_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            f"SELECT {self._REVIEW_COLS} FROM reviews WHERE id=?", (review_id,)
        ).fetchone()
        return self._review(row) if row else None

    async def decide_review(
        self,
        review_id: str,
        status: str,
        decision: dict[str, Any],
        by: str,
        now: float,
        signal: str | None,
    ) -> dict[str, Any]:
        """Decide a pending review once, log it, and wake its run through `signal`."""
        with self._tx() as db:
            row = db.execute(
                f"SELECT {self._REVIEW_COLS} FROM reviews WHERE id=?", (review_id,)
            ).fetchone()
            if row is None:
                raise RunNotFound(f"no review {review_id!r} in {self.url}")
            review = self._review(row)
            if review["status"] != "pending":
                raise ConfigError(
                    f"{review['kind']} {review_id} was already {review['status']} by "
                    f"{review['decided_by'] or 'someone'}; a decision is final"
                )
            payload = pydantic_core.to_json({"status": status, **decision, "by": by})
            db.execute(
                "UPDATE reviews SET status=?, decision=?, decided_at=?, decided_by=? WHERE id=?",
                (status, payload.decode(), now, by, review_id),
            )
            self._audit(db, by, status, review_id, audit_detail(decision), now)
            if signal is not None:
                run_row = db.execute(
                    f"SELECT {_RUN_COLS} FROM runs WHERE id=?", (review["run_id"],)
                ).fetchone()
                if run_row is not None and not _run(run_row).status.terminal:
                    self._deliver(db, _run(run_row), signal, payload, now)
        review.update(
            status=status, decision=_loads(payload.decode()), decided_at=now, decided_by=by
        )
        return review

    async def requeue_review(
        self, review_id: str, queue: str, deadline: float | None, now: float
    ) -> bool:
        """Move a still-pending review to another queue with a new deadline (timeout escalation)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE reviews SET queue=?, deadline=? WHERE id=? AND status='pending'",
                (queue, deadline, review_id),
            )
            if cur.rowcount:
                self._audit(
                    db, "keel", "escalated", review_id, {"queue": queue, "deadline": deadline}, now
                )
        return cur.rowcount == 1

    async def replace_review(self, old_id: str, review: dict[str, Any], now: float) -> bool:
        """Reservoir sampling: swap a still-pending sample for a new one."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM reviews WHERE id=? AND status='pending'", (old_id,))
            if not cur.rowcount:
                return False
            self._insert_review(db, review, now)
            self._audit(db, "keel", "resampled", review["id"], {"replaced": old_id}, now)
        return True

    async def count_sample(self, workflow: str, day: str) -> int:
        """Count one more completed run of `workflow` on `day`; the new count."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO sample_counts (workflow, day, seen) VALUES (?, ?, 1)"
                " ON CONFLICT(workflow, day) DO UPDATE SET seen = seen + 1",
                (workflow, day),
            )
            (seen,) = db.execute(
                "SELECT seen FROM sample_counts WHERE workflow=? AND day=?", (workflow, day)
            ).fetchone()
        return int(seen)

    async def audit_log(self, target: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        sql = "SELECT id, at, actor, action, target, detail FROM audit"
        args: list[Any] = []
        if target is not None:
            sql += " WHERE target=?"
            args.append(target)
        rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [
            {
                "id": r[0],
                "at": r[1],
                "actor": r[2],
                "action": r[3],
                "target": r[4],
                "detail": _loads(r[5]),
            }
            for r in rows
        ]

    # -- spans ----------------------------------------------------------------

    async def write_spans(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert span rows (see keel.observe.spans.SpanRow.row); duplicates are ignored,
        except that an execution's own span replaces one reconstructed for it (written
        by the next execution while the first's own write was still on its way)."""
        if not rows:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO spans (span_id, trace_id, parent_id, run_id, name, kind,"
                " start_ns, end_ns, status, status_message, attributes, events, links)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (trace_id, span_id) DO UPDATE SET name=excluded.name,"
                " start_ns=excluded.start_ns, end_ns=excluded.end_ns, status=excluded.status,"
                " status_message=excluded.status_message, attributes=excluded.attributes,"
                " events=excluded.events, links=excluded.links"
                f" WHERE {_RECONSTRUCTED.format('spans')}"
                f" AND NOT {_RECONSTRUCTED.format('excluded')}",
                rows,
            )

    async def load_spans(self, trace_id: str) -> list[tuple[Any, ...]]:
        return self._db.execute(
            "SELECT span_id, trace_id, parent_id, run_id, name, kind, start_ns, end_ns, status,"
            " status_message, attributes, events, links FROM spans WHERE trace_id=?"
            " ORDER BY start_ns",
            (trace_id,),
        ).fetchall()

    async def span_ids(self, trace_id: str) -> set[str]:
        rows = self._db.execute("SELECT span_id FROM spans WHERE trace_id=?", (trace_id,))
        return {r[0] for r in rows.fetchall()}

    async def purge_spans(self, ended_before_ns: int) -> int:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM spans WHERE end_ns IS NOT NULL AND end_ns<?", (ended_before_ns,)
            )
        return cur.rowcount

    async def running_owners(self) -> list[str]:
        rows = self._db.execute(
            "SELECT DISTINCT lease_owner FROM runs"
            " WHERE status='RUNNING' AND lease_owner IS NOT NULL"
        ).fetchall()
        return [r[0] for r in rows]

    async def expire_owner(self, owner: str) -> int:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE runs SET lease_expires=0 WHERE lease_owner=? AND status='RUNNING'", (owner,)
            )
        return cur.rowcount

    # -- worker heartbeats --------------------------------------------------------

    async def worker_beat(self, beat: WorkerBeat, *, forget_before: float | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO workers (owner, host, pid, workflows, embedded, started_at, seen_at,"
                " beat_every) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE SET"
                " workflows=excluded.workflows, seen_at=excluded.seen_at,"
                " beat_every=excluded.beat_every",
                (
                    beat.owner,
                    beat.host,
                    beat.pid,
                    pydantic_core.to_json(list(beat.workflows)).decode(),
                    int(beat.embedded),
                    beat.started_at,
                    beat.seen_at,
                    beat.beat_every,
                ),
            )
            if forget_before is not None:
                db.execute("DELETE FROM workers WHERE seen_at<?", (forget_before,))

    async def list_workers(self) -> list[WorkerBeat]:
        rows = self._db.execute(
            "SELECT owner, host, pid, workflows, embedded, started_at, seen_at, beat_every"
            " FROM workers ORDER BY seen_at DESC"
        ).fetchall()
        return [
            WorkerBeat(
                owner=r[0],
                host=r[1],
                pid=r[2],
                workflows=tuple(_loads(r[3]) or ()),
                embedded=bool(r[4]),
                started_at=r[5],
                seen_at=r[6],
                beat_every=r[7],
            )
            for r in rows
        ]

    async def remove_worker(self, owner: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM workers WHERE owner=?", (owner,))

    # -- console users ----------------------------------------------------------

    _USER_COLS = "name, role, token_id, token_hash, groups, created_at"

    @staticmethod
    def _user(row: tuple[Any, ...]) -> dict[str, Any]:
        keys = ("name", "role", "token_id", "token_hash", "groups", "created_at")
        out = dict(zip(keys, row, strict=True))
        out["groups"] = _loads(out["groups"]) or []
        return out

    async def add_user(self, user: dict[str, Any]) -> None:
        """Add a console user; a name already taken is refused."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO users (name, role, token_id, token_hash, groups, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    user["name"],
                    user["role"],
                    user["token_id"],
                    user["token_hash"],
                    _text(pydantic_core.to_json(list(user.get("groups") or []))),
                    user["created_at"],
                ),
            )
            if cur.rowcount != 1:
                raise ConfigError(f"user {user['name']!r} already exists in {self.url}")
            self._audit(
                db,
                user.get("by") or "cli",
                "user_added",
                user["name"],
                {"role": user["role"], "groups": list(user.get("groups") or [])},
                user["created_at"],
            )

    async def get_user(self, name: str) -> dict[str, Any] | None:
        row = self._db.execute(
            f"SELECT {self._USER_COLS} FROM users WHERE name=?", (name,)
        ).fetchone()
        return self._user(row) if row else None

    async def user_by_token_id(self, token_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            f"SELECT {self._USER_COLS} FROM users WHERE token_id=?", (token_id,)
        ).fetchone()
        return self._user(row) if row else None

    async def list_users(self) -> list[dict[str, Any]]:
        rows = self._db.execute(f"SELECT {self._USER_COLS} FROM users ORDER BY name").fetchall()
        return [self._user(r) for r in rows]

    async def remove_user(self, name: str, by: str = "cli") -> None:
        """Delete a user and every session of theirs in one transaction."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise ConfigError(f"no user {name!r} in {self.url}; see: keel users list")
            db.execute("DELETE FROM users WHERE name=?", (name,))
            ended = db.execute("DELETE FROM sessions WHERE user=?", (name,)).rowcount
            self._audit(db, by, "user_removed", name, {"role": row[0], "sessions": ended}, now)

    async def rotate_token(
        self, name: str, token_id: str, token_hash: str, by: str = "cli"
    ) -> None:
        """Replace a user's token (the old one stops working) and end their sessions."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE users SET token_id=?, token_hash=? WHERE name=?",
                (token_id, token_hash, name),
            )
            if cur.rowcount != 1:
                raise ConfigError(f"no user {name!r} in {self.url}; see: keel users list")
            ended = db.execute("DELETE FROM sessions WHERE user=?", (name,)).rowcount
            self._audit(db, by, "token_rotated", name, {"sessions": ended}, now)

    # -- console sessions -------------------------------------------------------

    async def create_session(self, session: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions (id_hash, user, csrf, client, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session["id_hash"],
                    session["user"],
                    session["csrf"],
                    session.get("client"),
                    session["created_at"],
                    session["expires_at"],
                ),
            )

    async def get_session(self, id_hash: str, now: float) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT s.id_hash, s.user, s.csrf, s.client, s.created_at, s.expires_at,"
            " u.role, u.groups FROM sessions s JOIN users u ON u.name = s.user"
            " WHERE s.id_hash=? AND s.expires_at>?",
            (id_hash, now),
        ).fetchone()
        if row is None:
            return None
        keys = ("id_hash", "user", "csrf", "client", "created_at", "expires_at", "role", "groups")
        out = dict(zip(keys, row, strict=True))
        out["groups"] = _loads(out["groups"]) or []
        return out

    async def delete_session(self, id_hash: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE id_hash=?", (id_hash,))

    async def purge_sessions(self, now: float) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM sessions WHERE expires_at<=?", (now,)).rowcount

    # -- retention (docs/storage.md) ---------------------------------------------------

    def _purgeable(self, db: sqlite3.Connection, scope: PurgeScope, limit: int) -> list[str]:
        """Ids of ended runs in `scope`, the longest ended first (index `runs_ended`)."""
        marks = ",".join("?" * len(scope.statuses))
        # `+status`: not by `runs_ready`, which would walk every ended run of the store.
        sql = f"SELECT id FROM runs WHERE ended_at<? AND +status IN ({marks})"
        args: list[Any] = [scope.ended_before, *(s.value for s in scope.statuses)]
        if scope.workflow is not None:
            sql += " AND workflow=?"
            args.append(scope.workflow)
        rows = db.execute(sql + " ORDER BY ended_at LIMIT ?", (*args, limit)).fetchall()
        return [r[0] for r in rows]

    @contextmanager
    def _secure_delete(self) -> Iterator[None]:
        """Deleted rows are overwritten with zeros, not left readable in free pages."""
        (was,) = self._db.execute("PRAGMA secure_delete").fetchone()
        self._db.execute("PRAGMA secure_delete=1")
        try:
            yield
        finally:
            self._db.execute(f"PRAGMA secure_delete={int(was)}")

    async def purge_runs(self, scope: PurgeScope, limit: int = 100) -> Purged:
        if not self._purgeable(self._db, scope, 1):
            return Purged()  # nothing to do: no write lock taken
        with self._secure_delete(), self._tx() as db:
            ids = self._purgeable(db, scope, limit)  # again: others may have purged them
            if not ids:
                return Purged()
            marks = ",".join("?" * len(ids))
            blobs = [
                r[0]
                for r in db.execute(
                    f"SELECT DISTINCT blob FROM steps WHERE run_id IN ({marks})"
                    " AND blob IS NOT NULL",
                    ids,
                )
            ]
            db.execute(
                "INSERT INTO usage_rollup (day, workflow, tenant, model, calls, input_tokens,"
                " output_tokens, cost_usd, cache_hits)"
                " SELECT CAST(created_at / 86400 AS INTEGER) * 86400, workflow,"
                " COALESCE(tenant, ''), model, COUNT(*), SUM(input_tokens), SUM(output_tokens),"
                f" SUM(cost_usd), SUM(cache_hit) FROM usage WHERE run_id IN ({marks})"
                " GROUP BY 1, 2, 3, 4 ON CONFLICT (day, workflow, tenant, model) DO UPDATE SET"
                " calls = calls + excluded.calls,"
                " input_tokens = input_tokens + excluded.input_tokens,"
                " output_tokens = output_tokens + excluded.output_tokens,"
                " cost_usd = cost_usd + excluded.cost_usd,"
                " cache_hits = cache_hits + excluded.cache_hits",
                ids,
            )
            out = Purged(runs=len(ids))
            for table in ("usage", "steps", "signals", "spans", "reviews", "escalations"):
                cur = db.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", ids)
                setattr(out, table, cur.rowcount)
            db.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
            for digest in blobs:  # content-addressed: another run's step may share it
                out.blobs += db.execute(
                    "DELETE FROM blobs WHERE digest=?"
                    " AND NOT EXISTS (SELECT 1 FROM steps WHERE blob=?)",
                    (digest, digest),
                ).rowcount
        return out

    @staticmethod
    def _expired(scope: PurgeScope) -> tuple[str, list[Any]]:
        """The sampler's counters of days before the cutoff's (UTC) day."""
        day = time.strftime("%Y-%m-%d", time.gmtime(scope.ended_before))
        sql, args = " FROM sample_counts WHERE day<?", [day]
        if scope.workflow is not None:
            sql += " AND workflow=?"
            args.append(scope.workflow)
        return sql, args

    async def purge_expired(self, scope: PurgeScope, now: float) -> Purged:
        samples, args = self._expired(scope)
        cache = " FROM kv_cache WHERE expires_at IS NOT NULL AND expires_at<=?"
        (some,) = self._db.execute(
            f"SELECT EXISTS (SELECT 1{samples}) OR EXISTS (SELECT 1{cache})", (*args, now)
        ).fetchone()
        if not some:
            return Purged()
        with self._secure_delete(), self._tx() as db:
            return Purged(
                sample_counts=db.execute(f"DELETE{samples}", args).rowcount,
                cache=db.execute(f"DELETE{cache}", (now,)).rowcount,
            )

    async def count_purge(self, scope: PurgeScope, now: float) -> Purged:
        marks = ",".join("?" * len(scope.statuses))
        doomed = f"SELECT id FROM runs WHERE ended_at<? AND +status IN ({marks})"
        args: list[Any] = [scope.ended_before, *(s.value for s in scope.statuses)]
        if scope.workflow is not None:
            doomed += " AND workflow=?"
            args.append(scope.workflow)
        of_runs = [
            f"(SELECT COUNT(*) FROM {t} WHERE run_id IN doomed)"
            for t in ("steps", "signals", "spans", "reviews", "escalations", "usage")
        ]
        samples, sample_args = self._expired(scope)
        row = self._db.execute(
            f"WITH doomed AS MATERIALIZED ({doomed}) SELECT (SELECT COUNT(*) FROM doomed),"
            f" {', '.join(of_runs)},"
            " (SELECT COUNT(*) FROM (SELECT DISTINCT blob AS d FROM steps"
            "  WHERE run_id IN doomed AND blob IS NOT NULL)"
            "  WHERE NOT EXISTS (SELECT 1 FROM steps s WHERE s.blob = d"
            "  AND s.run_id NOT IN doomed)),"
            f" (SELECT COUNT(*){samples}),"
            " (SELECT COUNT(*) FROM kv_cache WHERE expires_at IS NOT NULL AND expires_at<=?)",
            (*args, *sample_args, now),
        ).fetchone()
        names = ("runs", "steps", "signals", "spans", "reviews", "escalations", "usage")
        out = Purged(**dict(zip(names, row[:7], strict=True)))
        out.blobs, out.sample_counts, out.cache = row[7], row[8], row[9]
        return out

    def _space(self) -> StoreSpace:
        def pragma(name: str) -> int:
            return int(self._db.execute(f"PRAGMA {name}").fetchone()[0])

        size = pragma("page_size")
        return StoreSpace(
            size_bytes=pragma("page_count") * size,
            free_bytes=pragma("freelist_count") * size,
            shrinks=pragma("auto_vacuum") == 2,  # INCREMENTAL
        )

    async def reclaim_space(self, full: bool = False) -> StoreSpace:
        if full:
            # VACUUM rewrites the file; the mode set just before takes effect with it.
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("VACUUM")
        elif self._space().shrinks and self._space().free_bytes:
            # One statement frees every free page, one page per step: executescript runs
            # it to the end (execute() would stop after the first page).
            self._db.executescript("PRAGMA incremental_vacuum;")
        # Copy what can be copied from the WAL now, so the file shrinks and the zeroed
        # pages of deleted rows reach it; never waits for readers.
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return self._space()

    def _with_rollup(
        self,
        rows: list[tuple[Any, ...]],
        group_by: str,
        workflow: str | None,
        tenant: str | None,
        since: float | None,
    ) -> list[tuple[Any, ...]]:
        """Cost report rows with purged runs' usage added from its per-day totals: by run
        or step it is one `(purged runs)` row; a day counts only if it starts at or after
        `since` (its hours are gone)."""
        key = {"workflow": "workflow", "tenant": "NULLIF(tenant, '')", "model": "model"}.get(
            group_by, "?"
        )
        where: list[str] = []
        args: list[Any] = []
        for col, val in (("workflow", workflow), ("tenant", tenant)):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        if since is not None:
            where.append("day>=?")
            args.append(since)
        rolled = self._db.execute(
            f"SELECT {key}, SUM(calls), SUM(input_tokens), SUM(output_tokens), SUM(cost_usd),"
            " SUM(cache_hits) FROM usage_rollup"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " GROUP BY 1",
            ([PURGED_RUNS] if key == "?" else []) + args,
        ).fetchall()
        if not rolled:
            return rows
        merged = {r[0]: list(r) for r in rows}
        for r in rolled:
            have = merged.setdefault(r[0], [r[0], 0, 0, 0, 0.0, 0])
            for i in range(1, 6):
                have[i] = (have[i] or 0) + (r[i] or 0)
        return sorted((tuple(v) for v in merged.values()), key=lambda v: -(v[4] or 0))

    async def close(self) -> None:
        self._db.close()


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def call(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(self, *args, **kwargs)
        except sqlite3.Error as exc:
            if not _sqlite_file.is_fault(exc):
                raise
            raise _sqlite_file.fault(self.path, exc) from exc

    return call


# Every public operation reports a file or disk fault as one StoreError (path, cause,
# what to do), never as a raw sqlite3 error from somewhere inside.
for _name, _fn in list(vars(SQLiteStore).items()):
    if not _name.startswith("_") and inspect.iscoroutinefunction(_fn):
        setattr(SQLiteStore, _name, _guarded(_fn))
