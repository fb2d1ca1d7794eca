"""Postgres backend: many worker hosts on one database (`KEEL_STORE=postgresql://...`).

`PostgresStore` is `keel.store.sql.store.SQLStore` (the neutral queries of
`keel.store.sql`) on psycopg 3 with the Postgres dialect. psycopg's sync
`ConnectionPool` lends a connection per call and the query function runs in a worker
thread sized to the pool, so no statement ever blocks the event loop. Connections are in
autocommit; a write is the session's `BEGIN` ... `COMMIT` (READ COMMITTED, with
`{for_update}` row locks where a query reads then writes). The hot path is cheaper: a
journal entry under a lease, and a run's end, are one statement each whose lease check
is its own predicate, awaited on the event loop (`keel.store.postgres_async`): one
round trip and no thread hop per step. A run's creation, its claim and the reads of a
run (`get_run`, `load_steps`, `next_due`) go the same way; a read or a claim that meets
a broken connection or a conflict runs again on the threaded path, as `_run` would.

Payload columns are BYTEA: clear values are stored as their UTF-8 bytes, sealed values
as the envelope's bytes (`keel.store._sealed`), and both read back as text.

The schema is created on first open and upgraded only by `keel store migrate` (or
`auto_migrate`): `keel.store.postgres_schema`. Connection settings besides the URL
(pool size, timeouts, password file, application name) are `StoreOptions`, applied by
`keel.store.postgres_connect`.

Example:
    >>> store = PostgresStore("postgresql://keel:secret@db.internal/keel")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

import psycopg
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool, PoolTimeout

from keel.errors import ConfigError, PayloadUnreadable, StoreError
from keel.store import postgres_connect, postgres_schema
from keel.store.options import StoreOptions
from keel.store.postgres_async import AsyncStatements
from keel.store.records import Claimed, RekeyCounts, StepWrite, StoreSpace
from keel.store.sql import rekey, runs, writes
from keel.store.sql.core import Session, renderer
from keel.store.sql.dialect import Renderer
from keel.store.sql.postgres_dialect import PostgresDialect
from keel.store.sql.store import SQLStore
from keel.store.unit import Committed, UnitOfWork
from keel.store.wake import WakeFeed
from keel.types import RunInfo, RunStatus, StepRecord, StructuredError

if TYPE_CHECKING:
    from keel.codec import PayloadCodec

P = ParamSpec("P")
R = TypeVar("R")
_DIALECT = PostgresDialect()
Buffer = bytes | bytearray | memoryview
# A call whose transaction the server aborted (serialization failure, deadlock) or whose
# connection broke before anything committed is run again, whole, this many times with
# jittered backoff (10 ms doubling) before it surfaces as a StoreError.
_RETRIES = 4
_RETRY_FIRST = 0.01
# SQLSTATEs the server uses when it aborted a transaction for another's sake (40001
# serialization failure, 40P01 deadlock): nothing of it was applied, so it may run again.
_CONFLICTS = ("40001", "40P01")
# Seconds a call waits for a pooled connection. A call never waits for a busy one (the
# pool has a connection per thread), only while the pool reconnects: past this, the
# server is down, and the worker pauses and says so instead of hanging silently.
_POOL_WAIT = 5.0


class _Numeric(Loader):
    """NUMERIC as int when whole, else float: SUM over BIGINT is NUMERIC in Postgres,
    and the records (like SQLite's rows) hold plain numbers, never Decimal."""

    def load(self, data: Buffer) -> int | float:
        text = bytes(data).decode()
        return int(text) if text.lstrip("-").isdigit() else float(text)


class _Conn:
    """A psycopg connection as the neutral `Connection` (DB-API `execute`/`executemany`
    returning the cursor)."""

    __slots__ = ("_c",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._c = conn

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        # No parameters: the simple protocol, so a script may hold several statements.
        return self._c.execute(sql, parameters or None)

    def executemany(
        self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]
    ) -> psycopg.Cursor[Any]:
        cur = self._c.cursor()
        cur.executemany(sql, seq_of_parameters)
        return cur


class _PgSession(Session):
    """One pooled connection for the duration of one call."""

    _conn: _Conn
    # A COMMIT was sent: a connection that breaks now leaves its outcome unknown, so the
    # call is never run again on its own (see PostgresStore._run).
    committing = False

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        conn = self._conn._c
        conn.execute(_DIALECT.begin_write)
        try:
            yield self
            self.committing = True
            conn.execute("COMMIT")
        except BaseException:
            # A broken connection has no transaction left to end; keep the first error.
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise

    def seal(self, data: bytes | str | None, where: str, *row: str) -> str | bytes | None:
        # BYTEA takes bytes only: a clear value is its UTF-8 bytes.
        out = super().seal(data, where, *row)
        return out.encode() if isinstance(out, str) else out


def _fault(url: str, exc: psycopg.Error) -> StoreError:
    """A StoreError saying the database at `url` (password hidden) could not be used."""
    where = _safe(url)
    state = getattr(exc, "sqlstate", None)
    reason = str(exc).strip() or type(exc).__name__
    kind, hint = _kind(exc, state or "", reason)
    return StoreError(
        f"store {where} failed (Postgres: {reason}): {hint}",
        store=where,
        reason=reason,
        sqlstate=state,
        kind=kind,
    )


def _kind(exc: psycopg.Error, state: str, reason: str) -> tuple[str, str]:
    """What kind of fault `exc` is, and what to do about it. The worker waits out every
    kind but the lasting ones (`auth`, `missing`, `corrupt`: keel.engine.worker)."""
    if state == "53100":
        return "full", "its disk is full; free space on the database server, then retry"
    if state == "25006":
        return "read-only", "the server is read-only (a standby, or a failover under way)"
    if state.startswith("28") or "password authentication failed" in reason:
        return "auth", "check the user and password in KEEL_STORE"
    if state == "3D000" or ("database" in reason and "does not exist" in reason):
        return "missing", "create the database, or fix its name in KEEL_STORE"
    if state.startswith("XX"):
        return "corrupt", "the server reports damaged data; see its log"
    if state in _CONFLICTS:
        return "conflict", "another transaction kept conflicting with this one; retry"
    if state == "" or state.startswith(("08", "57P")) or isinstance(exc, PoolTimeout):
        return "unreachable", "check that the server is up and reachable, then retry"
    if state.startswith("53"):
        return "busy", "the server is out of a resource (connections, memory); retry"
    return "other", "see the server's log"


def _is_fault(exc: BaseException) -> bool:
    """True for faults of the server or the connection (not programming errors): the
    cases a SQLite store reports as StoreError too. A standby's refusal to write (a
    failover) is one, though psycopg files it under InternalError."""
    return isinstance(
        exc,
        psycopg.OperationalError | psycopg.InterfaceError | psycopg.errors.ReadOnlySqlTransaction,
    )


def _may_retry(exc: psycopg.Error, session: _PgSession | None) -> bool:
    """True when the whole call may run again: the server aborted its transaction (a
    conflict), or the connection broke before any COMMIT was sent (nothing applied)."""
    if getattr(exc, "sqlstate", None) in _CONFLICTS:
        return True
    if isinstance(exc, PoolTimeout):  # it waited for a connection already: surface it
        return False
    broken = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and (
        getattr(exc, "sqlstate", None) is None or str(exc.sqlstate).startswith(("08", "57P"))
    )
    return broken and (session is None or not session.committing)


class _QuietOutage(logging.Filter):
    """Drops psycopg_pool's per-connection warnings during an outage (a line for every
    broken connection and every reconnect attempt): Keel logs one line per episode
    (keel.engine.worker)."""

    _NOISE = (
        "error connecting in %r: %s",
        "discarding closed connection: %s",
        "discarding broken connection: %s",
        "closing returned connection: %s",
        "rolling back returned connection: %s",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self._NOISE


logging.getLogger("psycopg.pool").addFilter(_QuietOutage())


def _safe(url: str) -> str:
    """`url` with its password replaced, fit for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://…"
    host, db = info.get("host", ""), info.get("dbname", "")
    port = f":{info['port']}" if info.get("port") else ""
    user = f"{info['user']}@" if info.get("user") else ""
    return f"postgresql://{user}{host}{port}/{db}"


def _configure(conn: psycopg.BaseConnection[Any]) -> None:
    conn.adapters.register_loader("numeric", _Numeric)


class PostgresStore(SQLStore):
    """The shared store: one Postgres database used by workers on many hosts.

    With a `codec` (keel.codec), every payload column is stored sealed by it; `options`
    are the connection settings (pool size, timeouts, password file; keel.config reads
    them from KEEL_* and keel.toml).

    Example:
        >>> store = PostgresStore("postgresql://keel@localhost/keel")  # doctest: +SKIP
    """

    def __init__(
        self, url: str, codec: PayloadCodec | None = None, options: StoreOptions | None = None
    ) -> None:
        self.url = url
        self.codec = codec
        opts = options or StoreOptions()
        size = opts.pool_size
        self._render: Renderer = renderer(_DIALECT)
        # Every connection this store makes uses it (not `url`): it carries the options.
        self._conninfo = info = postgres_connect.conninfo(url, opts)
        try:
            # One direct connection first: a wrong URL, password or database fails here at
            # once (a pool would retry it until its timeout), and it creates the schema.
            with postgres_connect.connect(info) as conn:
                postgres_schema.ensure(conn, _safe(url), opts.auto_migrate)
            self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                info,
                min_size=1,
                max_size=size,
                kwargs={"autocommit": True, "cursor_factory": psycopg.RawCursor},
                configure=_configure,
                open=False,
                name="keel",
            )
            self._pool.open(wait=False)
        except psycopg.Error as exc:
            if not _is_fault(exc):
                raise
            raise _fault(url, exc) from None
        self._threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="keel-pg")
        # A journal write that is one statement skips the thread hop (see commit).
        self._statements = AsyncStatements(info, size, _configure)
        self._closed = False

    def _session(self, conn: psycopg.Connection[Any]) -> _PgSession:
        return _PgSession(self.url, self.codec, _DIALECT, self._render, _Conn(conn))

    def _run(self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        # A call whose first transaction failed without applying anything runs again,
        # whole (a fresh connection, a fresh transaction): a broken pooled connection after
        # a server restart, a serialization failure or a deadlock. Once a COMMIT was sent,
        # or a transaction of the call committed, it is never run again here.
        delay = _RETRY_FIRST
        for attempt in range(_RETRIES + 1):
            session: _PgSession | None = None
            try:
                with self._pool.connection(timeout=_POOL_WAIT) as conn:
                    session = self._session(conn)
                    return fn(session, *args, **kwargs)
            except psycopg.Error as exc:
                if attempt == _RETRIES or not _may_retry(exc, session):
                    raise
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(
        self, fn: Callable[Concatenate[Session, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._threads, functools.partial(self._run, fn, args, kwargs)
            )
        except psycopg.Error as exc:
            if not _is_fault(exc):
                raise
            raise _fault(self.url, exc) from exc

    # -- one-statement calls: from the event loop, no thread hop (postgres_async) -----

    async def create_run(
        self,
        run_id: str,
        workflow: str,
        input_json: bytes,
        now: float,
        tenant: str | None = None,
        session: str | None = None,
    ) -> tuple[RunInfo, bool]:
        """One `INSERT ... RETURNING` with its NOTIFY (`runs.creating`); an existing run
        is read as `get_run` does."""
        s = self._sealer()
        sql, params = runs.creating(s, run_id, workflow, input_json, now, tenant, session)
        # After a broken connection the insert may have applied: the threaded call is
        # idempotent (it inserts unless the run exists, then reads it).
        rows = await self._fetch(sql, params)
        if rows is None:
            return await super().create_run(run_id, workflow, input_json, now, tenant, session)
        if rows:
            return s.as_run(rows[0][:-1]), True
        run = await self.get_run(run_id)
        if run is None:  # deleted since (retention): start it again
            return await super().create_run(run_id, workflow, input_json, now, tenant, session)
        return run, False

    async def claim(
        self,
        owner: str,
        lease_seconds: float,
        limit: int,
        workflows: Iterable[str],
        ids: Iterable[str] | None = None,
    ) -> list[Claimed]:
        """One statement (the watched ids as one array), sent from the event loop."""
        names = list(workflows)
        ids = None if ids is None else list(dict.fromkeys(ids))
        if not names or limit <= 0 or ids == []:
            return await super().claim(owner, lease_seconds, limit, names, ids)
        sql, params = runs.claiming(owner, lease_seconds, limit, names, ids, array=True)
        # After a broken connection any lease it took runs out unused and the run is
        # claimed again (a claim holds no step: nothing can run twice).
        rows = await self._fetch(sql, params)
        if rows is None:
            return await super().claim(owner, lease_seconds, limit, names, ids)
        s = self._sealer()
        try:
            return runs.claimed_rows(s, rows)
        except PayloadUnreadable:
            await self._call(runs.unlease, owner, [r[0] for r in rows])
            raise

    async def next_due(
        self, workflows: Iterable[str], ids: Iterable[str] | None = None
    ) -> float | None:
        # A read the idle worker makes: never queued behind other calls' threads.
        names, ids = list(workflows), None if ids is None else list(ids)
        query = runs.due_query(self._sealer(), names, ids)
        if query is None:
            return None
        rows = await self._fetch(query[0], tuple(query[1]))
        if rows is None:
            return await super().next_due(names, ids)
        return float(rows[0][0]) if rows else None

    async def get_run(self, run_id: str) -> RunInfo | None:
        rows = await self._fetch(writes.RUN_BY_ID, (run_id,))
        if rows is None:
            return await super().get_run(run_id)
        return self._sealer().as_run(rows[0]) if rows else None

    async def load_steps(self, run_id: str) -> list[StepRecord]:
        rows = await self._fetch(runs.LOAD_STEPS, (run_id,))
        if rows is None:
            return await super().load_steps(run_id)
        s = self._sealer()
        return [s.as_step(r) for r in rows]

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]] | None:
        """The rows of one statement sent from the event loop; None when the caller
        should take its threaded path instead: another loop, or a broken connection or
        conflict (the caller's threaded call must be safe to run after it, and is
        retried as `_run` does)."""
        if not self._statements.usable():
            return None
        try:
            return await self._statements.fetch(self._render(sql), params)
        except psycopg.Error as exc:
            if _may_retry(exc, None):
                return None
            if not _is_fault(exc):
                raise
            raise _fault(self.url, exc) from exc

    async def commit(self, uow: UnitOfWork) -> Committed:
        """The usual unit, one journal entry under a lease, is one statement
        (`writes.leased_step`); any other unit is a transaction in a worker thread."""
        w = runs.single_step(uow) if uow.owner is not None else None
        if w is None or uow.owner is None or not self._statements.usable():
            return await super().commit(uow)
        await self._guarded(uow.run_id, *writes.leased_step(self._sealer(), uow.owner, w))
        return Committed()

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
        if writes or not self._statements.usable():
            return await super().finish_run(
                run_id, owner, status, result_json, error, state_json, writes, now
            )
        s = self._sealer()
        await self._guarded(
            run_id, *runs.finishing(s, run_id, owner, status, result_json, error, state_json, now)
        )

    def _sealer(self) -> _PgSession:
        # A session without a connection: building a statement's values only seals them.
        return _PgSession(self.url, self.codec, _DIALECT, self._render, _Conn(cast(Any, None)))

    async def _guarded(self, run_id: str, sql: str, params: tuple[Any, ...]) -> None:
        """Run a write whose lease predicate is its own (it changes one row, or none when
        the lease is lost: then LeaseLost, read in a normal call)."""
        try:
            changed = await self._statements.execute(self._render(sql), params)
        except psycopg.Error as exc:  # as `_call` reports them
            if not _is_fault(exc):
                raise
            raise _fault(self.url, exc) from exc
        if changed != 1:
            raise await self._call(writes.lease_lost, run_id)

    # The clock statements read: tests pin it to a literal to move time.
    @property
    def _now_sql(self) -> str:
        return self._render("{now}")

    @_now_sql.setter
    def _now_sql(self, expr: str) -> None:
        self._render = renderer(_DIALECT, now=expr)

    async def now(self) -> float:
        return await self._call(_now)

    def wake_feed(self) -> WakeFeed:
        """LISTEN for other hosts' wake-ups on a connection of its own (not pooled)."""
        from keel.store._pg_listen import PgWakeFeed

        return PgWakeFeed(self._conninfo, _safe(self.url))  # with the store's options

    # -- space and encryption at rest ---------------------------------------------

    async def reclaim_space(self, full: bool = False) -> StoreSpace:
        """VACUUM (FULL with `full`: rewrites every table, locking each meanwhile)."""
        return await self._call(_vacuum, full)

    async def rekey(self, batch: int = 500, vacuum: bool = False) -> RekeyCounts:
        """Seal every stored payload with the codec's current key (see SQLiteStore.rekey);
        `vacuum` also rewrites the tables so old row versions are dropped."""
        codec = self.codec
        if codec is None:
            raise ConfigError(
                "no encryption key is configured, so there is no key to rekey to: set"
                " KEEL_ENCRYPTION_KEY (make a key with: keel store new-key)"
            )
        done = await self._call(rekey.reseal, codec, batch)
        if vacuum:
            await self.reclaim_space(full=True)
        return RekeyCounts(
            sealed=done["sealed"],
            rekeyed=done["rekeyed"],
            current=done["current"],
            key_id=codec.key_id,
            vacuumed=vacuum,
        )

    async def close(self) -> None:
        if not self._closed:
            await self._statements.close()
            await asyncio.to_thread(self._shut)

    def _shut(self) -> None:
        self._closed = True
        self._threads.shutdown(wait=True)
        self._pool.close()


def _now(s: Session) -> float:
    (now,) = s.execute("SELECT {now}").fetchone()
    return float(now)


def _space(s: Session) -> StoreSpace:
    (size,) = s.execute("SELECT pg_database_size(current_database())").fetchone()
    # Dead row versions' space is reused by later writes, like SQLite's free pages.
    (free,) = s.execute(
        "SELECT COALESCE(SUM(n_dead_tup * (pg_relation_size(relid)"
        " / GREATEST(n_live_tup + n_dead_tup, 1))), 0) FROM pg_stat_user_tables"
    ).fetchone()
    return StoreSpace(size_bytes=int(size), free_bytes=int(free), shrinks=False)


def _vacuum(s: Session, full: bool) -> StoreSpace:
    # VACUUM runs outside a transaction: the session's connection is in autocommit.
    s.execute("VACUUM (FULL)" if full else "VACUUM")
    return _space(s)
