"""Retention: ended runs older than a cutoff go, with everything that is theirs.

`purge` deletes in small transactions and pauses after each for as long as it took,
so workers writing to the same store wait for one batch at most, never for the whole
purge. `sweep` is how a worker applies `Settings.retention_days`: at most once per
`retention_interval` per process and store, however many workers the process hosts.
What is purged, and what is kept, is in docs/storage.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from keel.store.base import Store
from keel.store.records import Purged, PurgeScope

DAY = 86400.0
BATCH = 100  # runs per transaction: a few milliseconds of write lock each

_swept: dict[str, float] = {}  # store url -> when this process last started a sweep of it


async def purge(
    store: Store,
    scope: PurgeScope,
    now: float,
    *,
    batch: int = BATCH,
    stop: Callable[[], bool] | None = None,
) -> Purged:
    """Purge every run of `scope`, batch by batch, then what expired by `now`.

    Each batch is one transaction (all of a run's rows go together, or none), so an
    interrupted purge leaves whole runs and the next one carries on. `stop` is asked
    before each batch. Returns the rows deleted per table.

    Example:
        done = await purge(store, PurgeScope(ended_before=time.time() - 30 * DAY), time.time())
    """
    total = Purged()
    while stop is None or not stop():
        began = time.monotonic()
        got = await store.purge_runs(scope, batch)
        total.add(got)
        if got.runs:
            await store.reclaim_space()
        if got.runs < batch:
            break
        # Other writers (workers) get the lock for at least as long as this batch held it.
        await asyncio.sleep(max(0.01, time.monotonic() - began))
    if stop is None or not stop():
        total.add(await store.purge_expired(scope, now))
    return total


async def sweep(
    store: Store,
    days: float,
    now: float,
    *,
    every: float,
    stop: Callable[[], bool] | None = None,
) -> Purged | None:
    """Purge runs that ended more than `days` ago, unless this process started a sweep
    of this store less than `every` seconds ago (then None; also when `days` <= 0).

    Workers in other processes may sweep the same store at the same time: each batch
    takes the runs still there under the write lock, so they share the work.
    """
    if days <= 0:
        return None
    last = _swept.get(store.url)
    if last is not None and now - last < every:
        return None
    _swept[store.url] = now  # before purging: a failed sweep waits for the next turn
    return await purge(store, PurgeScope(ended_before=now - days * DAY), now, stop=stop)
