"""The SQLite store's core, shared by every concern: the connection, one transaction per
call, payload sealing, decoding run and step rows, and the writes several concerns make
inside their own transaction (the lease check, journal entries with their metered usage,
signal delivery, an audit entry).

Settings: WAL journal, synchronous=NORMAL (every commit survives a process
kill; only an OS crash or power loss can drop the last commits), busy timeout
for several worker processes on one file, and BEGIN IMMEDIATE for every write
so a lease check and the write it guards are one atomic unit.

Calls are synchronous under an async signature: each is a single short
transaction, cheaper than a hop to a thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pydantic_core

from keel._jsonv import from_json
from keel.errors import ConfigError, LeaseLost
from keel.store import _sealed, _sqlite_file
from keel.store._sqlite_schema import SCHEMA_VERSION, upgrade_script
from keel.store.base import StepWrite, Store
from keel.types import (
    Escalation,
    ReviewRequest,
    RunInfo,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    StructuredError,
    live_degraded,
    superseded_attempts,
)

if TYPE_CHECKING:
    from keel.codec import PayloadCodec

RUN_COLS = (
    "id, workflow, status, input, result, error, state, created_at, updated_at, ended_at, "
    "wake_at, waiting_on, attempts, lease_owner,"
    # degraded steps and phase attempts (1), which tell which attempts were thrown away
    " (SELECT json_group_array(json_array(s.key, s.kind = 'phase')) FROM steps s"
    "  WHERE s.run_id = runs.id AND (s.fallback = 'degrade' OR s.kind = 'phase')), tenant"
)
# The database clock in epoch seconds, evaluated inside each statement that decides a
# lease or a timer: workers' clocks may disagree, the database's is one.
NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"
ESC_COLS = (
    "id, run_id, workflow, queue, kind, step, status, packet, resolution, created_at,"
    " resolved_at, resolved_by"
)
STEP_COLS = (
    "run_id, key, scope, position, kind, name, digest, status, output, error, attempts, "
    "started_at, ended_at, wake_at, state_delta, blob, fallback, input, attempt_log"
)


def _path_from_url(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ConfigError(
            f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = url[len("sqlite:///") :]
    if not path:
        raise ConfigError(f"bad SQLite URL {url!r}: no file path after sqlite:///")
    return path


def loads(text: str | None) -> Any:
    return None if text is None else from_json(text)


def _err(text: str | None) -> StructuredError | None:
    return None if text is None else StructuredError.model_validate_json(text)


def _run(row: Sequence[Any]) -> RunInfo:
    return RunInfo(
        id=row[0],
        workflow=row[1],
        status=RunStatus(row[2]),
        input=loads(row[3]) or {},
        result=loads(row[4]),
        error=_err(row[5]),
        state=loads(row[6]),
        created_at=row[7],
        updated_at=row[8],
        ended_at=row[9],
        wake_at=row[10],
        waiting_on=loads(row[11]) or [],
        attempts=row[12],
        lease_owner=row[13],
        degraded=_degraded(loads(row[14]) or []),
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


def _step(row: Sequence[Any]) -> StepRecord:
    return StepRecord(
        run_id=row[0],
        key=row[1],
        scope=row[2],
        position=row[3],
        kind=StepKind(row[4]),
        name=row[5],
        digest=row[6],
        status=StepStatus(row[7]),
        output=loads(row[8]),
        error=_err(row[9]),
        attempts=row[10],
        started_at=row[11],
        ended_at=row[12],
        wake_at=row[13],
        state_delta=loads(row[14]),
        blob=row[15],
        fallback=row[16],
        input=loads(row[17]),
        attempt_log=loads(row[18]),
    )


class SQLiteCore(Store):
    """The connection and the helpers every concern of the SQLite store shares
    (keel.store.sqlite composes the concerns into `SQLiteStore`)."""

    def __init__(self, url: str, codec: PayloadCodec | None = None) -> None:
        self.url = url
        self.codec = codec
        self.path = _path_from_url(url)
        if self.path != ":memory:":
            _sqlite_file.prepare(self.path, upgrade_script(0))
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
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"store {self.path!r} has schema v{version}, newer than this Keel "
                f"(v{SCHEMA_VERSION}); upgrade Keel"
            )
        if version < SCHEMA_VERSION:
            # executescript manages its own transaction; keep the whole upgrade in one.
            try:
                self._db.executescript(upgrade_script(version))
            except sqlite3.OperationalError:
                # Another process (workers starting together on a new store) may have
                # upgraded it between our version check and our lock: then we are done.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                (now,) = self._db.execute("PRAGMA user_version").fetchone()
                if now < SCHEMA_VERSION:
                    raise

    # -- payloads: sealed by the codec when there is one (keel/store/_sealed.py) ------

    def _seal(self, data: bytes | str | None, where: str, *row: str) -> str | bytes | None:
        if data is None:
            return None
        if self.codec is None:
            return data if isinstance(data, str) else data.decode()
        raw = data.encode() if isinstance(data, str) else data
        return _sealed.seal(self.codec, raw, where, row)

    def _open(self, value: str | bytes | None, where: str, *row: str) -> str | None:
        if value is None or type(value) is str:
            return value
        out = _sealed.unseal(self.codec, value, where, row)
        return out if isinstance(out, str) else out.decode()

    def _opened(
        self, row: Sequence[Any], cols: tuple[tuple[int, str], ...], *key: str
    ) -> Sequence[Any]:
        """`row` with its payload columns (index, column) read back as text."""
        if all(type(row[i]) is not bytes for i, _ in cols):
            return row  # all clear: the usual case without a codec
        out = list(row)
        for i, where in cols:
            out[i] = self._open(out[i], where, *key)
        return out

    _RUN_SEALED = ((3, "runs.input"), (4, "runs.result"), (5, "runs.error"), (6, "runs.state"))
    _STEP_SEALED = (
        (6, "steps.digest"),
        (8, "steps.output"),
        (9, "steps.error"),
        (14, "steps.state_delta"),
        (17, "steps.input"),
        (18, "steps.attempt_log"),
    )

    def _as_run(self, row: Sequence[Any]) -> RunInfo:
        return _run(self._opened(row, self._RUN_SEALED, row[0]))

    def _as_step(self, row: Sequence[Any]) -> StepRecord:
        return _step(self._opened(row, self._STEP_SEALED, row[0], row[1]))

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

    @contextmanager
    def _secure_delete(self) -> Iterator[None]:
        """Deleted and overwritten values are zeroed, not left readable in free pages
        (purges, rekey), whatever the SQLite build's default."""
        (was,) = self._db.execute("PRAGMA secure_delete").fetchone()
        self._db.execute("PRAGMA secure_delete=1")
        try:
            yield
        finally:
            self._db.execute(f"PRAGMA secure_delete={int(was)}")

    # -- writes the concerns make inside their own transactions ------------------------

    def _check_owner(self, db: sqlite3.Connection, run_id: str, owner: str) -> None:
        row = db.execute("SELECT lease_owner, status FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None or row[0] != owner or row[1] != "RUNNING":
            status = row[1] if row else "missing"
            raise LeaseLost(
                f"run {run_id} is no longer owned by this worker (status {status})",
                run_id=run_id,
                status=status,
            )

    def _insert(self, db: sqlite3.Connection, writes: Sequence[StepWrite]) -> None:
        seal = self._seal
        for w in writes:
            r = w.record
            if w.usage is not None:
                m = w.usage
                _count_daily(db, r.run_id, r.key, m.cost_usd, r.ended_at or r.started_at)
                db.execute(
                    "INSERT OR REPLACE INTO usage (run_id, step_key, workflow, tenant, model,"
                    " input_tokens, output_tokens, cost_usd, cache_hit, created_at)"
                    " SELECT ?, ?, workflow, tenant, ?, ?, ?, ?, ?, ? FROM runs WHERE id=?",
                    (
                        r.run_id,
                        r.key,
                        m.model,
                        m.input_tokens,
                        m.output_tokens,
                        m.cost_usd,
                        int(m.cache_hit),
                        r.ended_at or r.started_at,
                        r.run_id,
                    ),
                )
            if w.blob is not None and r.blob:
                data = w.blob if self.codec is None else seal(w.blob, "blobs.data", r.blob)
                db.execute(
                    "INSERT OR IGNORE INTO blobs (digest, size, data) VALUES (?, ?, ?)",
                    (r.blob, len(w.blob), data),
                )
            at = (r.run_id, r.key)
            db.execute(
                f"INSERT OR REPLACE INTO steps ({STEP_COLS}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.run_id,
                    r.key,
                    r.scope,
                    r.position,
                    r.kind.value,
                    r.name,
                    seal(r.digest, "steps.digest", *at),
                    r.status.value,
                    seal(w.output_json, "steps.output", *at),
                    seal(r.error.model_dump_json(exclude_none=True), "steps.error", *at)
                    if r.error
                    else None,
                    r.attempts,
                    r.started_at,
                    r.ended_at,
                    r.wake_at,
                    seal(pydantic_core.to_json(r.state_delta), "steps.state_delta", *at)
                    if r.state_delta
                    else None,
                    r.blob,
                    r.fallback,
                    seal(pydantic_core.to_json(r.input, fallback=repr), "steps.input", *at)
                    if r.input is not None
                    else None,
                    seal(pydantic_core.to_json(r.attempt_log), "steps.attempt_log", *at)
                    if r.attempt_log
                    else None,
                ),
            )

    _REVIEW_COLS = (
        "id, kind, run_id, workflow, step, queue, status, request, decision, deadline,"
        " created_at, decided_at, decided_by"
    )

    def _insert_review(self, db: sqlite3.Connection, review: ReviewRequest) -> bool:
        """Insert a pending review unless its id exists (audited when new); True if new."""
        cur = db.execute(
            f"INSERT OR IGNORE INTO reviews ({self._REVIEW_COLS}) VALUES"
            " (?, ?, ?, ?, ?, ?, 'pending', ?, NULL, ?, ?, NULL, NULL)",
            (
                review.id,
                review.kind,
                review.run_id,
                review.workflow,
                review.step,
                review.queue,
                self._seal(pydantic_core.to_json(review.request), "reviews.request", review.id),
                review.deadline,
                review.created_at,
            ),
        )
        return cur.rowcount == 1

    def _insert_escalation(self, db: sqlite3.Connection, e: Escalation) -> bool:
        """Insert an open escalation unless its id exists; True if new."""
        cur = db.execute(
            f"INSERT OR IGNORE INTO escalations ({ESC_COLS}) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, NULL)",
            (
                e.id,
                e.run_id,
                e.workflow,
                e.queue,
                e.kind,
                e.step,
                e.status,
                self._seal(e.packet.model_dump_json(), "escalations.packet", e.id),
                e.created_at,
            ),
        )
        return cur.rowcount == 1

    def _deliver(
        self, db: sqlite3.Connection, run: RunInfo, name: str, payload_json: bytes, now: float
    ) -> None:
        db.execute(
            "INSERT INTO signals (run_id, name, payload, created_at) VALUES (?, ?, ?, ?)",
            (run.id, name, self._seal(payload_json, "signals.payload", run.id, name), now),
        )
        if run.status is RunStatus.WAITING and name in run.waiting_on:
            db.execute(
                "UPDATE runs SET status='PENDING', updated_at=? WHERE id=? AND status='WAITING'",
                (now, run.id),
            )

    def _audit(
        self,
        db: sqlite3.Connection,
        actor: str,
        action: str,
        target: str,
        detail: Any,
        now: float,
    ) -> None:
        sealed = self._seal(pydantic_core.to_json(detail), "audit.detail", target)
        db.execute(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (now, actor, action, target, sealed),
        )

    # The clock statements read (tests of this backend pin it to a literal to move time).
    _now_sql = NOW_SQL

    async def now(self) -> float:
        (now,) = self._db.execute(f"SELECT {self._now_sql}").fetchone()
        return float(now)

    async def close(self) -> None:
        self._db.close()
