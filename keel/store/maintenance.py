"""`MaintenanceStore`: retention (docs/storage.md), space, and encryption at rest."""

from __future__ import annotations

import abc

from keel.store.records import Purged, PurgeScope, RekeyCounts, StoreSpace


class MaintenanceStore(abc.ABC):
    """Purges, space and rekeying.

    Example:
        scope = PurgeScope(ended_before=time.time() - 30 * 86400)
        while (done := await store.purge_runs(scope)).runs == 100: ...
    """

    @abc.abstractmethod
    async def purge_runs(self, scope: PurgeScope, limit: int = 100) -> Purged:
        """Delete up to `limit` runs of `scope`, oldest ended first, with everything that
        is theirs, in one transaction: steps, signals, spans, requests and escalations,
        usage (folded into per-day totals first), and the blobs no other step refers to.

        Call it until it returns fewer than `limit` runs (`keel.engine.retention.purge`
        does, pausing between batches so workers keep writing). Cheap, and no write
        lock, when nothing matches.
        """

    @abc.abstractmethod
    async def purge_expired(self, scope: PurgeScope, now: float) -> Purged:
        """Delete what expired regardless of runs: response-cache entries past their
        expiry at `now`, and the sampler's counters of days before `scope`'s cutoff."""

    @abc.abstractmethod
    async def count_purge(self, scope: PurgeScope, now: float) -> Purged:
        """What `purge_runs` (to the end) and `purge_expired` would delete; reads only."""

    @abc.abstractmethod
    async def reclaim_space(self, full: bool = False) -> StoreSpace:
        """Give free pages back to the file system where the store allows it cheaply;
        `full` rewrites the whole store (it then shrinks after every purge), holding
        the write lock meanwhile. Returns the space after."""

    @abc.abstractmethod
    async def rekey(self, batch: int = 500, vacuum: bool = False) -> RekeyCounts:
        """Seal every stored payload with the codec's current key (values under older keys
        and values stored in clear), in short batches that concurrent writers survive.
        Raises `ConfigError` when the store has no codec."""

    @abc.abstractmethod
    async def payload_keys(self) -> dict[str | None, int]:
        """How many stored payloads each key id sealed (None: stored in clear)."""
