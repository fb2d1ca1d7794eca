"""What differs between SQL databases, and nothing else: the `Dialect`.

The query modules of `keel.store.sql` are written once, in SQL that SQLite (3.35+) and
Postgres (12+) both accept (`INSERT ... ON CONFLICT (...) DO NOTHING / DO UPDATE SET
... = excluded....`, row values, `WITH ... AS MATERIALIZED`, `RETURNING`), with `?`
placeholders and a few `{fragment}` markers for what truly differs:

- `{now}`: the database clock in epoch seconds (leases and timers are decided on it);
- `{for_update}`: the row lock a read-then-write takes (nothing on SQLite, whose write
  transaction already excludes other writers);
- `{skip_locked}`: the row lock a claim's pick takes, skipping rows another claim holds
  (empty on SQLite, which runs one write at a time; when set, `runs.claim` picks and
  leases in one statement);
- `{noindex}`: a prefix that keeps the planner off an index (SQLite's unary `+`);
- `{day:expr}`: the start of `expr`'s UTC day, in epoch seconds;
- `{head:col}`: the first bytes of a payload column when it holds a sealed value;
- `{append_only_off:table}`, `{append_only_on:table}`: lift and restore the guard of an
  append-only table (rekey reseals the audit log in place);
- in DDL, the column types `{real}`, `{bigint}`, `{blob}`, `{payload}`, `{serial_pk}` and the
  table suffix `{without_rowid}`;
- `{run_cols}`: the columns a run is read with (they aggregate JSON: `json_array_agg`).

Not a marker but a whole statement: `wake_sql(where)` tells listening workers that the
`runs` rows matching `where` may be claimable, delivered when the transaction commits
(Postgres NOTIFY; '' on SQLite, which has no cross-process notification: the query
modules skip the statement, see `keel.store.sql.writes.wake`).

A statement is rendered once (`Renderer`: markers filled in, `?` rewritten to the
driver's placeholder style) and cached by its text, so the hot path does one dict
lookup per statement, no string work.

What a second backend must provide (Postgres with psycopg 3 is the next one):

1. A `Dialect` subclass with the fragments above, `placeholders()`, `max_params`,
   `begin_write`, how the schema version is kept, read and written
   (`version_table()`, `version_sql()`, `set_version_sql()`), and the append-only
   guard of the audit log (`append_only()`, `append_only_off()`, `append_only_on()`).
2. A `keel.store.sql.core.Session` subclass: one connection for the duration of a
   call, `execute`/`executemany` through the session's `Renderer` (DB-API style:
   the returned cursor has `fetchone`, `fetchall`, `rowcount` and iterates rows),
   `write()` (one write transaction, rolled back on any error) and, if it has one,
   `scrubbing()` (deleted values zeroed on disk). Where `payload` columns are binary
   (Postgres: BYTEA), its `seal()` also returns a clear value as UTF-8 bytes
   (`open()` already reads clear bytes back as text).
3. A `keel.store.sql.store.SQLStore` subclass whose `_call(fn, *args)` runs a neutral
   query function with a session: SQLite runs it inline (one short transaction is
   cheaper than a hop to a thread); Postgres runs it in a worker thread on a
   connection taken from psycopg's sync `ConnectionPool` (autocommit; `write()` issues
   `BEGIN` / `COMMIT`), except the one-statement writes (`writes.leased_step`,
   `runs.finishing`), which it awaits on an `AsyncConnection` with no thread hop.
   It also implements what is not SQL (`now`, `reclaim_space`,
   `rekey`'s file-level steps, `close`) and creates or upgrades the schema
   (`keel.store.sql.schema`).

Example:
    >>> from keel.store.sql.sqlite_dialect import SQLiteDialect
    >>> Renderer(SQLiteDialect())("SELECT id FROM runs WHERE wake_at<={now}")[:36]
    'SELECT id FROM runs WHERE wake_at<=('
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

# Rendered statements kept per session; dynamic statements (IN lists of many lengths)
# could otherwise grow it without bound.
_CACHE_LIMIT = 4096


class Cursor(Protocol):
    """The part of a DB-API cursor the query modules use."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


class Connection(Protocol):
    """The part of a DB-API connection the query modules use (`sqlite3.Connection`
    as it is; a psycopg connection through a small adapter)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Any: ...


class _Fn:
    """A fragment with an argument: `{day:created_at}` calls `fn("created_at")`."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[str], str]) -> None:
        self.fn = fn

    def __format__(self, spec: str) -> str:
        return self.fn(spec)


class Dialect:
    """The SQL a database spells its own way; every method returns SQL text.

    Subclasses set the class attributes and override what differs.
    """

    name = "sql"
    # The database clock in epoch seconds, as an expression.
    now = "CURRENT_TIMESTAMP"
    # Bound variables one statement may carry (IN lists are chunked under it).
    max_params = 32766
    # Starts the one write transaction a call makes.
    begin_write = "BEGIN"
    for_update = ""
    skip_locked = ""
    noindex = ""
    real = "REAL"
    bigint = "BIGINT"
    blob = "BLOB"
    payload = "TEXT"
    serial_pk = "INTEGER PRIMARY KEY"
    without_rowid = ""

    def day(self, expr: str) -> str:
        """The start of `expr`'s UTC day (epoch seconds in, epoch seconds out)."""
        return f"CAST({expr} / 86400 AS INTEGER) * 86400"

    def head(self, col: str) -> str:
        """The first 300 bytes of `col` when it holds a sealed (binary) value, else NULL."""
        return f"substr({col}, 1, 300)"

    def json_array_agg(self, *items: str) -> str:
        """JSON text: an array with one `[items...]` array per row aggregated."""
        raise NotImplementedError

    def placeholders(self, sql: str) -> str:
        """`sql` with its `?` placeholders in the driver's style (`?` stays `?`)."""
        return sql

    def version_table(self) -> str:
        """DDL of where the schema version is kept, if it is a table ('' if not)."""
        return ""

    def version_sql(self) -> str:
        """A statement whose one row, one column is the schema version (none: no row)."""
        raise NotImplementedError

    def set_version_sql(self, version: int) -> str:
        """A statement recording `version` as the schema version."""
        raise NotImplementedError

    def append_only(self, table: str) -> str:
        """DDL refusing updates and deletes of `table`'s rows (the audit log)."""
        raise NotImplementedError

    def append_only_off(self, table: str) -> str:
        """Lifts the update guard of `table` inside one transaction (rekey reseals)."""
        raise NotImplementedError

    def append_only_on(self, table: str) -> str:
        """Restores what `append_only_off` lifted."""
        raise NotImplementedError

    def memory_search(self) -> str:
        """DDL of the full-text index over `memories` (text and context), kept in step
        with the table by the database itself."""
        raise NotImplementedError

    def memory_match(self, terms: Sequence[str]) -> str:
        """The full-text query matching any of `terms`, each quoted so that no user text
        (quotes, operators, non-ASCII) is read as query syntax."""
        raise NotImplementedError

    def memory_keyword(self, validity: str) -> str:
        """A statement: `(seq, score)` of memories matching the query (first `?`, from
        `memory_match`) in a namespace (second `?`) meeting `validity` (a condition on
        `m`, with its own `?`s next), best first, `LIMIT ?` last. Higher score is better."""
        raise NotImplementedError

    def wake_sql(self, where: str, table: str = "runs") -> str:
        """A statement announcing, on commit, the runs matching `where` (a condition on
        `runs`, with `?` placeholders) to listening workers; '' when the database cannot.
        `table`: another source of run rows (`workflow`, `id`), e.g. a CTE's name."""
        return ""

    def fragments(self) -> dict[str, object]:
        """Every `{marker}` a neutral statement may use, filled in for this dialect."""
        return {
            "now": self.now,
            "for_update": self.for_update,
            "skip_locked": self.skip_locked,
            "noindex": self.noindex,
            "real": self.real,
            "bigint": self.bigint,
            "blob": self.blob,
            "payload": self.payload,
            "serial_pk": self.serial_pk,
            "without_rowid": self.without_rowid,
            "day": _Fn(self.day),
            "head": _Fn(self.head),
            "append_only_off": _Fn(self.append_only_off),
            "append_only_on": _Fn(self.append_only_on),
        }


class Renderer:
    """Neutral statements rendered for one dialect, each once.

    Example:
        >>> from keel.store.sql.sqlite_dialect import SQLiteDialect
        >>> render = Renderer(SQLiteDialect(), {"now": "0.0"})
        >>> render("SELECT {now} + ?")
        'SELECT 0.0 + ?'
    """

    __slots__ = ("_dialect", "_fragments", "cache")

    def __init__(self, dialect: Dialect, extra: Mapping[str, object] | None = None) -> None:
        self._dialect = dialect
        self._fragments = {**dialect.fragments(), **(extra or {})}
        # statement text -> rendered text; sessions read it directly on the hot path
        self.cache: dict[str, str] = {}

    def __call__(self, sql: str) -> str:
        out = self.cache.get(sql)
        if out is None:
            out = self._dialect.placeholders(sql.format_map(self._fragments))
            if len(self.cache) >= _CACHE_LIMIT:
                self.cache.clear()
            self.cache[sql] = out
        return out


def marks(n: int) -> str:
    """`n` placeholders for an IN list: `marks(3) == '?,?,?'`."""
    return ",".join("?" * n)
