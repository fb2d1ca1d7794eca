"""A store as a whole, whatever its backend: migrate its schema (`keel store migrate`)
and probe it (`keel store check`): reach it, time a round trip, read its schema version
and its clock, without opening it as a worker would (so an older schema can be seen,
not refused).

Example:
    >>> import asyncio
    >>> asyncio.run(migrate("sqlite:////tmp/x.db", dry_run=True)).action  # doctest: +SKIP
    'created'
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from keel.store.options import StoreOptions
from keel.store.sql.migrate import Migration, plan
from keel.store.sql.schema import VERSION
from keel.store.sql.sqlite_dialect import SQLiteDialect

T = TypeVar("T")
_SQLITE = SQLiteDialect()


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql:", "postgres:"))


def describe(url: str) -> tuple[str, str]:
    """The backend's name and where the store is, fit for messages (no password)."""
    if _is_postgres(url):
        from keel.store import postgres_backend

        return "postgres", postgres_backend()._safe(url)
    if url.startswith("sqlite:"):
        from keel.store.sqlite import _path_from_url

        return "sqlite", _path_from_url(url)
    from keel.store import open_store

    open_store(url)  # no backend takes it: its error says which URLs work
    raise AssertionError(f"open_store accepted {url!r}")


async def migrate(
    url: str, options: StoreOptions | None = None, dry_run: bool = False
) -> Migration:
    """Create or upgrade the store's schema to this Keel's version (idempotent, safe from
    several hosts at once), or with `dry_run` say what that would do."""
    opts = options or StoreOptions()
    if _is_postgres(url):
        return await asyncio.to_thread(_pg_migrate, url, opts, dry_run)
    return await _sqlite_migrate(url, dry_run)


def _pg_migrate(url: str, options: StoreOptions, dry_run: bool) -> Migration:
    from keel.store import postgres_connect, postgres_schema
    from keel.store.postgres import _safe

    with _pg_faults(url), postgres_connect.connect(postgres_connect.conninfo(url, options)) as c:
        return postgres_schema.migrate(c, _safe(url), dry_run)


async def _sqlite_migrate(url: str, dry_run: bool) -> Migration:
    from keel.store._sqlite_schema import MIGRATIONS
    from keel.store.sqlite import SQLiteStore, _path_from_url

    path = _path_from_url(url)
    where = path
    before = _sqlite_version(path)
    steps = plan(before, VERSION, MIGRATIONS, where)
    if not dry_run:
        # Opening creates or upgrades it, in one transaction (a file has one host).
        await SQLiteStore(url).close()
    return Migration(where, before, VERSION, steps, dry_run)


def _sqlite_version(path: str) -> int:
    """The version in the file's header; 0 for no file (or a file with no schema)."""
    if path == ":memory:" or not Path(path).exists():
        return 0
    with _sqlite_faults(path), contextlib.closing(_sqlite_ro(path)) as db:
        (version,) = db.execute(_SQLITE.version_sql()).fetchone()
        return int(version)


def _sqlite_ro(path: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)


@contextlib.contextmanager
def _sqlite_faults(path: str) -> Any:
    from keel.store import _sqlite_file

    try:
        yield
    except sqlite3.Error as exc:
        if not _sqlite_file.is_fault(exc):
            raise
        raise _sqlite_file.fault(path, exc) from None


@contextlib.contextmanager
def _pg_faults(url: str) -> Any:
    import psycopg

    from keel.store.postgres import _fault, _is_fault

    try:
        yield
    except psycopg.Error as exc:
        if not _is_fault(exc):
            raise
        raise _fault(url, exc) from None


# Runs a function of the probe's connection off the event loop (Postgres) or inline.
_Runner = Callable[[Callable[[Any], Any]], Awaitable[Any]]


class Probe:
    """A connection to a store for checking it: `round_trip()`, `version()`, `now()`
    (the store's clock, epoch seconds), and `server` (what it is: version, limits)."""

    def __init__(
        self,
        backend: str,
        where: str,
        run: _Runner,
        version: Callable[[Any], int],
        now_sql: str,
        server: dict[str, Any],
    ) -> None:
        self.backend = backend
        self.where = where
        self.server = server
        self._run = run
        self._version = version
        self._now_sql = now_sql

    async def round_trip(self) -> float:
        """Seconds one trivial statement takes, there and back."""
        start = time.perf_counter()
        await self._run(lambda c: c.execute("SELECT 1").fetchone())
        return time.perf_counter() - start

    async def version(self) -> int:
        """The schema version the store holds (0: none yet)."""
        return int(await self._run(self._version))

    async def now(self) -> float:
        """The store's clock, as leases and timers read it."""
        sql = f"SELECT {self._now_sql}"
        return float(await self._run(lambda c: c.execute(sql).fetchone()[0]))


@contextlib.asynccontextmanager
async def probe(url: str, options: StoreOptions | None = None) -> AsyncIterator[Probe]:
    """Connect to the store at `url` for checking it (StoreError when it cannot be
    reached or opened), e.g. `async with probe(url) as p: await p.version()`."""
    opts = options or StoreOptions()
    backend, where = describe(url)
    if backend == "postgres":
        async with _pg_probe(url, where, opts) as found:
            yield found
        return
    path = where
    # No file yet: nothing to read but the clock, which is this host's own.
    exists = path != ":memory:" and Path(path).exists()
    with _sqlite_faults(path):
        db = _sqlite_ro(path) if exists else sqlite3.connect(":memory:")
    try:

        async def run(fn: Callable[[Any], T]) -> T:
            with _sqlite_faults(path):
                return fn(db)

        def version(c: Any) -> int:
            return int(c.execute(_SQLITE.version_sql()).fetchone()[0]) if exists else 0

        info = {"sqlite_version": sqlite3.sqlite_version, "exists": exists}
        yield Probe(backend, path, run, version, _SQLITE.now, info)
    finally:
        db.close()


@contextlib.asynccontextmanager
async def _pg_probe(url: str, where: str, options: StoreOptions) -> AsyncIterator[Probe]:
    from keel.store import postgres_connect, postgres_schema
    from keel.store.sql.postgres_dialect import PostgresDialect

    info = postgres_connect.conninfo(url, options)

    def open_() -> Any:
        with _pg_faults(url):
            return postgres_connect.connect(info)

    conn = await asyncio.to_thread(open_)
    try:

        async def run(fn: Callable[[Any], T]) -> T:
            def call() -> T:
                with _pg_faults(url):
                    return fn(conn)

            return await asyncio.to_thread(call)

        def server(c: Any) -> dict[str, Any]:
            (version,) = c.execute("SHOW server_version").fetchone()
            (most,) = c.execute("SHOW max_connections").fetchone()
            return {"server_version": version, "max_connections": int(most)}

        about = await run(server)
        read = postgres_schema.read_version
        yield Probe("postgres", where, run, read, PostgresDialect.now, about)
    finally:
        await asyncio.to_thread(conn.close)

