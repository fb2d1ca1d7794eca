"""The store backends the test suite runs on: one list, and `KEEL_TEST_STORE` picks one.

Every test takes its store URL from here (the `store_url` / `store` fixtures in
tests/conftest.py, or `fresh_url(dir)` where a test needs a second store or hands a URL
to a subprocess), so switching the variable switches the whole suite. A new backend is
one more entry in `BACKENDS`; one that needs a server starts it in `url`'s first call.

Example:
    KEEL_TEST_STORE=sqlite pytest -q tests/store
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ENV = "KEEL_TEST_STORE"
DEFAULT = "sqlite"


@dataclass(frozen=True, slots=True)
class Backend:
    """A store backend under test: its name and how to make a fresh, empty store's URL."""

    name: str
    # A URL no other test uses, its files (if any) under the given directory.
    url: Callable[[Path, str], str]
    # Every byte the backend holds for the store at a URL, as a copy of its disk would
    # have them (for tests proving a secret never reaches storage); None: cannot say.
    at_rest: Callable[[str], bytes] | None = None
    # Every row the backend holds for the store at a URL, as text, for "wrote nothing"
    # checks that must also see what no interface reads back (e.g. queued signals).
    rows: Callable[[str], list[str]] | None = None
    # Runs one statement (`?` placeholders) on the store's database and commits:
    # for what no interface does (moving a run back in time, single usage rows).
    sql: Callable[[str, str, tuple[object, ...]], list[tuple[object, ...]]] | None = None
    # The database's clock in seconds since the epoch, as an SQL expression.
    now_sql: str = ""


def _sqlite_url(directory: Path, name: str) -> str:
    # tmp_path is absolute, so this is sqlite:////tmp/...: the form open_store documents
    return f"sqlite:///{directory}/{name}.db"


def _sqlite_at_rest(url: str) -> bytes:
    # The file and its WAL as they are, then again after a checkpoint: a value must be in
    # neither (most recent writes are only in the WAL until a checkpoint moves them).
    path = Path(url.removeprefix("sqlite:///"))

    def files() -> bytes:
        return b"".join(
            Path(f"{path}{suffix}").read_bytes()
            for suffix in ("", "-wal")
            if Path(f"{path}{suffix}").exists()
        )

    before = files()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return before + files()


def _sqlite_rows(url: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
        return list(db.iterdump())


_pg_databases: dict[tuple[Path, str], str] = {}


def _sqlite_sql(url: str, query: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
        return db.execute(query, args).fetchall()


def _postgres_url(directory: Path, name: str) -> str:
    # A database of its own on the session's throwaway server (started on first use); the
    # same (directory, name) is the same database, as it is the same file on SQLite.
    from tests.services.postgres import fresh_database

    key = (directory.resolve(), name)
    if key not in _pg_databases:
        _pg_databases[key] = fresh_database()
    return _pg_databases[key]


def _postgres_at_rest(url: str) -> bytes:
    # Every value of every row of the store's database, BYTEA as its raw bytes (a sealed
    # or clear payload as stored), the rest as text. The server's files mix databases and
    # hold old row versions too; what is checked here is what the database holds live.
    import psycopg

    out = bytearray()
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
        for (table,) in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    out += value if isinstance(value, bytes) else str(value).encode()
                    out += b"\0"
    return bytes(out)


def _postgres_rows(url: str) -> list[str]:
    from tests.services.postgres import rows

    return rows(url)


def _postgres_sql(url: str, query: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.replace("?", "%s"), args)
        return cur.fetchall() if cur.description else []


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(
            "sqlite",
            _sqlite_url,
            _sqlite_at_rest,
            _sqlite_rows,
            _sqlite_sql,
            "((julianday('now') - 2440587.5) * 86400.0)",
        ),
        Backend(
            "postgres",
            _postgres_url,
            _postgres_at_rest,
            _postgres_rows,
            _postgres_sql,
            "EXTRACT(EPOCH FROM clock_timestamp())",
        ),
    )
}


class UnknownBackend(Exception):
    """KEEL_TEST_STORE names no registered backend."""


def backend() -> Backend:
    """The backend this test session runs on (`KEEL_TEST_STORE`, default sqlite)."""
    name = os.environ.get(ENV, "").strip() or DEFAULT
    found = BACKENDS.get(name)
    if found is None:
        raise UnknownBackend(
            f"{ENV}={name!r} is not a store backend the tests know; use one of:"
            f" {', '.join(sorted(BACKENDS))} (tests/backends.py lists them)"
        )
    return found


def fresh_url(directory: Path, name: str = "keel") -> str:
    """A fresh store URL on this session's backend, e.g. `fresh_url(tmp_path, "other")`."""
    return backend().url(Path(directory), name)


def at_rest(url: str) -> bytes:
    """Every byte this session's backend holds for the store at `url`, e.g.
    `assert b"secret" not in at_rest(store_url)`; skips the test on a backend that cannot
    produce them."""
    read = backend().at_rest
    if read is None:
        pytest.skip(f"the {backend().name} backend cannot show the bytes it stores")
    return read(url)


def sql(url: str, query: str, *args: object) -> list[tuple[object, ...]]:
    """Run `query` (`?` placeholders; `{now}` is the database's clock in epoch seconds) on
    the database of the store at `url` and commit, e.g.
    `sql(url, "UPDATE runs SET ended_at = ended_at - ?", 86400)`. For what no store
    interface does; the rows it returns, if any."""
    b = backend()
    assert b.sql is not None, f"the {b.name} backend runs no SQL"
    return b.sql(url, query.replace("{now}", b.now_sql), args)


def is_sqlite() -> bool:
    """Whether this session runs on SQLite (tests of the file itself skip otherwise)."""
    return backend().name == "sqlite"
