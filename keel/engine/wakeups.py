"""How long an idle worker waits before it runs the claim query again.

Without a live wake feed it polls with backoff: `poll_interval`, doubling after every
claim that found nothing, up to `poll_max`. With one (keel.store.wake: Postgres
LISTEN/NOTIFY, SQLite's data_version) wake-ups come from the store, and the claim query
runs only every `listen_poll` seconds as a safety net. Either way it never sleeps past
the next due timer, which no feed reports (nothing is committed when a timer comes due).
Any wake-up or successful claim starts the backoff over. Wake-ups are coalesced by the
worker's one `asyncio.Event`: a thousand NOTIFYs while it claims cost one more claim.
"""

from __future__ import annotations

from keel.engine.runtime import Settings
from keel.errors import ConfigError
from keel.store.wake import WakeFeed

_POLL_SETTINGS = ("poll_interval", "poll_max", "listen_poll")


def check_pacing(settings: Settings) -> None:
    """Refuse poll settings that would spin or never poll (each must be > 0 seconds).

    Example:
        >>> check_pacing(Settings(poll_interval=0.1))
    """
    for name in _POLL_SETTINGS:
        value = getattr(settings, name)
        if not isinstance(value, int | float) or not value > 0:
            raise ConfigError(
                f"setting {name} (KEEL_{name.upper()}) must be a number of seconds > 0,"
                f" got {value!r}"
            )


class Pacer:
    """The idle wait of one worker's claim loop.

    Example:
        >>> pace = Pacer(Settings(poll_interval=0.1, poll_max=2.0), feed=None)
        >>> [pace.wait(None) for _ in range(3)]
        [0.1, 0.2, 0.4]
        >>> pace.woke(); pace.wait(due=0.05)
        0.1
        >>> Pacer(Settings(poll_max=2.0, listen_poll=5.0), feed=None).wait(None, busy=True)
        0.1
    """

    __slots__ = ("_feed", "_idle", "_settings")

    def __init__(self, settings: Settings, feed: WakeFeed | None) -> None:
        self._settings = settings
        self._feed = feed
        self._idle = 0  # claims in a row that found nothing since the last wake-up

    @property
    def listening(self) -> bool:
        """True while wake-ups come from the store (the poll is only a safety net)."""
        return self._feed is not None and self._feed.live

    def woke(self) -> None:
        """A wake-up or a claim that got runs: poll soon again."""
        self._idle = 0

    def wants_due(self) -> bool:
        """Whether the next wait is long enough for the next timer to matter."""
        s = self._settings
        # The first idle wait is poll_interval, which a timer never shortens.
        return self.listening or (self._idle > 0 and s.poll_max > s.poll_interval)

    def wait(self, due: float | None, busy: bool = False) -> float:
        """Seconds to wait for a wake-up before claiming again; `due`: seconds until
        the next timer of this worker's runs (None: none or not asked); `busy`: it is
        executing runs, which wake it as they end, so it skips asking for the next
        timer (a query per run would cost more than it saves) and waits at most
        `poll_max`: a timer coming due meanwhile is late by no more than that."""
        s = self._settings
        if self.listening:
            wait = s.listen_poll
        else:
            wait = min(s.poll_max, s.poll_interval * 2 ** min(self._idle, 60))
        if busy:
            wait = min(wait, s.poll_max)
        self._idle += 1
        if due is not None:
            # Never below poll_interval: a due run another worker is taking must not spin.
            wait = min(wait, max(due, s.poll_interval))
        return wait
