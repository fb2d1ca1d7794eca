"""The Postgres wake feed: `LISTEN keel_wake` on a connection of its own.

The connection is a dedicated psycopg `AsyncConnection`, not one from the store's pool:
a listening connection is held for the worker's life, and NOTIFYs reach only the
connection that listens. When it drops (the server restarted, an operator ran
`pg_terminate_backend`, the network failed) the feed stops being `live`, so the worker
polls with backoff meanwhile, and it reconnects with backoff; once listening again it
wakes the worker once for whatever was committed while it was away.

Example:
    feed = PgWakeFeed(conninfo, "postgresql://keel@db/keel")  # conninfo: the store's
    task = asyncio.ensure_future(feed.run(on_wake, 0.1))
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from keel.store.wake import WAKE_CHANNEL, Wake, WakeFeed, parse_wake

log = logging.getLogger("keel.worker")
_FIRST_RETRY = 0.1  # seconds before the first reconnect; doubled each failure
_MAX_RETRY = 5.0
# TCP keepalives: a connection whose server vanished without a word (a failover, a
# cable) is found dead within about a minute instead of the kernel's two hours.
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class PgWakeFeed(WakeFeed):
    """Wake-ups from `pg_notify('keel_wake', ...)` of any host's commits.

    Example:
        feed = store.wake_feed()  # a PgWakeFeed for a PostgresStore
    """

    def __init__(self, conninfo: str, where: str) -> None:
        self._conninfo = conninfo  # the store's: URL, password file, timeouts, app name
        self._where = where  # the URL with its password hidden, for log lines
        self._live = False
        self._failing = False
        self._delay = _FIRST_RETRY

    @property
    def live(self) -> bool:
        return self._live

    async def run(self, wake: Wake, every: float) -> None:
        self._delay = _FIRST_RETRY
        while True:
            try:
                await self._listen(wake)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never crash the worker: it polls meanwhile
                if not self._failing:  # one line per episode, not one per retry
                    log.warning(
                        "wake-ups from %s stopped (%s: %s); polling until they are back",
                        self._where,
                        type(exc).__name__,
                        str(exc).strip() or "connection lost",
                    )
                self._failing = True
            finally:
                self._live = False
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, _MAX_RETRY)

    async def _listen(self, wake: Wake) -> None:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, **_KEEPALIVES)
        async with conn:
            await conn.execute(f"LISTEN {WAKE_CHANNEL}")
            self._live = True
            self._delay = _FIRST_RETRY  # it was up: a later drop retries soon again
            if self._failing:
                log.warning("wake-ups from %s are back", self._where)
                self._failing = False
            wake(None, None)  # anything committed while this feed was not listening
            async for note in conn.notifies():
                workflow, run_id = parse_wake(note.payload)
                wake(workflow, run_id)
