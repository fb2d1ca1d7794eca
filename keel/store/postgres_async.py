"""Single statements sent from the event loop itself, for the Postgres store's hot path.

A store call normally hops to a worker thread that borrows a pooled connection
(`PostgresStore._call`): two cross-thread wake-ups, about 0.1 ms on a busy 2-core host,
as much as the round trip of a small statement. A journal write that is one statement
(`keel.store.sql.writes.leased_step`), a run's creation (one `INSERT ... RETURNING`), a
claim (one `UPDATE ... RETURNING`) and the reads of a run (`get_run`, `load_steps`,
`next_due`) need no transaction and no thread: they go on an `AsyncConnection` of this
small set instead, awaited without blocking the loop.

The set is bound to the event loop that first used it (asyncio locks are); on another
loop `usable()` is False and the caller takes its threaded path. Idle connections are
kept LIFO; a connection that failed, or whose statement was interrupted, is closed and
dropped, and a connection fault drops the idle ones too (the next call opens a new one),
so a restarted server costs one fault, not one per idle connection.

Example:
    >>> conns = AsyncStatements("postgresql://keel@db/keel", size=8)  # doctest: +SKIP
    >>> changed = await conns.execute("UPDATE runs SET ... WHERE id=$1", ("r1",))  # doctest: +SKIP
    >>> rows = await conns.fetch("SELECT status FROM runs WHERE id=$1", ("r1",))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import psycopg


class AsyncStatements:
    """Up to `size` autocommit connections to `conninfo` (a libpq connection string or
    URL) that each run one statement at a time."""

    def __init__(
        self,
        conninfo: str,
        size: int,
        configure: Callable[[psycopg.AsyncConnection[Any]], None] | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._configure = configure  # e.g. the store's type loaders, as its pool sets them
        self._size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    def usable(self) -> bool:
        """True if this coroutine may use the set (open, and on its event loop)."""
        if self._closed:
            return False
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop, self._slots = loop, asyncio.Semaphore(self._size)
        return self._loop is loop

    async def execute(self, sql: str, params: Sequence[Any]) -> int:
        """Run `sql` (driver placeholders) with `params` in autocommit; rows it changed.

        Call only after `usable()`; psycopg's errors propagate as they are."""
        changed, _ = await self._send(sql, params, fetch=False)
        return changed

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run `sql` (a query, or a write with RETURNING) in autocommit; its rows.

        Call only after `usable()`; psycopg's errors propagate as they are."""
        _, rows = await self._send(sql, params, fetch=True)
        return rows

    async def _send(
        self, sql: str, params: Sequence[Any], fetch: bool
    ) -> tuple[int, list[tuple[Any, ...]]]:
        assert self._slots is not None, "usable() first"
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                cur = await conn.execute(sql, params)
                changed = cur.rowcount
                rows = await cur.fetchall() if fetch else []
            except BaseException as exc:
                # Broken, or a statement cut off mid-flight (cancelled): never reuse it.
                conn.pgconn.finish()
                if isinstance(exc, psycopg.OperationalError):
                    self._drop_idle()  # a restarted server left them all dead: one fault
                raise
            if self._closed:
                await conn.close()
            else:
                self._idle.append(conn)
            return changed, rows

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.pgconn.finish()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        # The store's connection string: it carries its options (timeouts, password, name).
        conn = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, cursor_factory=psycopg.AsyncRawCursor
        )
        if self._configure is not None:
            self._configure(conn)
        return conn

    async def close(self) -> None:
        """Close the idle connections; the set refuses new work (`usable()` is False)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            if self._loop is asyncio.get_running_loop():
                await conn.close()
            else:  # another loop's sockets: just drop them
                conn.pgconn.finish()
