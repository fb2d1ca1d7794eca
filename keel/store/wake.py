"""Wake feeds: how a worker learns, without polling, that a run may have become claimable
because another process (on any host) committed something.

A store that can push offers one through `JournalStore.wake_feed()`. Postgres does:
every write that makes a run claimable (a run started, a signal, approval or escalation
decision delivered, a run handed back, leases of a dead worker expired, a timer set)
also runs `pg_notify('keel_wake', '["<workflow>", "<run id>"]')` in its transaction, so
the wake-up is delivered only once the write is committed, and the feed `LISTEN`s on a
connection of its own. SQLite, which cannot push across processes, offers a feed that
polls `PRAGMA data_version` (a counter that changes when any connection commits): a far
cheaper check than the claim query, and the claim follows only when something changed.

A due timer commits nothing, so no feed reports it: the worker asks the store when the
next timer of its workflows is due (`JournalStore.next_due`) and sleeps until then.
A feed is a hint, never the only way: the worker still polls as a slow safety net, and
falls back to polling with backoff whenever its feed is not `live`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import pydantic_core

# The Postgres channel every store's wake-ups go to.
WAKE_CHANNEL = "keel_wake"

# Called with (workflow, run id) of a run that may be claimable now; (None, None) when
# the feed cannot say which (it reconnected and may have missed some, or SQLite saw a
# commit): every worker then looks.
Wake = Callable[[str | None, str | None], None]


class WakeFeed(abc.ABC):
    """Wake-ups from commits of other processes, for one worker.

    Example:
        feed = store.wake_feed()
        if feed is not None:
            task = asyncio.ensure_future(feed.run(lambda wf, run_id: event.set(), 0.1))
    """

    @property
    @abc.abstractmethod
    def live(self) -> bool:
        """True while wake-ups arrive (the worker then polls only as a safety net)."""

    @abc.abstractmethod
    async def run(self, wake: Wake, every: float) -> None:
        """Call `wake` for every commit that may make a run claimable, until cancelled.

        Never raises for a lost connection or a store fault: it stops being `live`,
        retries with backoff and, once back, calls `wake(None, None)` for what it missed.
        `every` is how often a feed that has to poll (SQLite) checks; a pushing feed
        ignores it.
        """


def parse_wake(payload: str) -> tuple[str | None, str | None]:
    """(workflow, run id) of a NOTIFY payload; (None, None) for one it cannot read.

    Example:
        >>> parse_wake('["triage", "r1"]')
        ('triage', 'r1')
    """
    try:
        value = pydantic_core.from_json(payload)
    except ValueError:
        return None, None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return value[0], value[1]
    return None, None
