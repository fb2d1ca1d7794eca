"""How far the store's clock is from this host's: measured once per heartbeat by
workers, and by `keel store check`.

Example:
    >>> import asyncio, time
    >>> async def late() -> float: return time.time() + 5
    >>> round(asyncio.run(clock_offset(late)))
    5
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

# Seconds: clocks closer than this count as one. An offset that small is the round
# trip's noise and the store clock's resolution, and must not move timers.
SAME_CLOCK = 1.0


async def clock_offset(store_now: Callable[[], Awaitable[float]]) -> float:
    """The store's clock minus this host's, in seconds: `store_now()` read once, taking
    the middle of the round trip as the moment it was read."""
    before = time.time()
    theirs = await store_now()
    return theirs - (before + time.time()) / 2
