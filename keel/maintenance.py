"""`Maintenance`: the store's upkeep as `keel purge` and `keel store` run it.

Retention (deleting ended runs with everything that is theirs), giving space back,
and re-encrypting payloads under the current key. The commands call this service,
never the store, so what they may do is written down in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel.host import StoreHost
    from keel.store import RekeyCounts
    from keel.store.records import Purged, PurgeScope, StoreSpace


class Maintenance:
    """Purge, reclaim space and rekey an App's store.

    Example:
        upkeep = Maintenance(app)
        done = await upkeep.purge(PurgeScope(ended_before=time.time() - 30 * 86400), time.time())
        print(done.counts(), await upkeep.reclaim_space())
    """

    def __init__(self, app: StoreHost) -> None:
        self._app = app

    async def purge(
        self, scope: PurgeScope, now: float, *, batch: int = 100, dry_run: bool = False
    ) -> Purged:
        """Delete the ended runs of `scope` in short transactions workers survive (and
        what expired by `now`); with `dry_run`, only count what would go."""
        store = self._app.store
        if dry_run:
            return await store.count_purge(scope, now)
        from keel.engine.retention import purge

        return await purge(store, scope, now, batch=batch)

    async def reclaim_space(self, full: bool = False) -> StoreSpace:
        """Give free pages back to the file system; `full` rewrites the whole store."""
        return await self._app.store.reclaim_space(full=full)

    async def rekey(self, batch: int = 500, vacuum: bool = False) -> RekeyCounts:
        """Seal every stored payload with the codec's current key; the counts."""
        return await self._app.store.rekey(batch=batch, vacuum=vacuum)

    async def payload_keys(self) -> dict[str | None, int]:
        """How many stored payloads each key id sealed (None: stored in clear)."""
        return await self._app.store.payload_keys()
