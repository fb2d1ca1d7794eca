"""`StoreHost`: what an App-level service needs from the application hosting it.

Services (`keel.llm.costs.Costs`, `keel.hitl.inbox.Inbox`, `keel.maintenance.Maintenance`,
`keel.server.identity.Identity`, ...) name the App only through this protocol, so they
sit below it and the server and CLI reach the store only through them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from keel.store.base import Store


class StoreHost(Protocol):
    """An application's store and where it is (`keel.App` is one).

    Example:
        async def runs_in(app: StoreHost) -> int:
            return len(await app.store.list_runs())
    """

    store_url: str

    @property
    def store(self) -> Store: ...
