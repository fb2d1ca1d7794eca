"""`Inbox`: the requests for people as the console lists them, across kinds and runs.

`app.approvals`, `app.reviews` and `app.escalations` list, read and decide one kind
each; the console also needs the latest decisions first, how many wait in a queue,
and everything one run asked of people. This service answers those, so the server
never reads the store itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel.host import StoreHost
    from keel.types import Escalation, ReviewRequest


class Inbox:
    """Requests for people in an App's store, read the ways the console shows them.

    Example:
        inbox = Inbox(app)
        waiting = await inbox.waiting(["approval"], queue="payments")
        reviews, escalations = await inbox.of_run(run_id)
    """

    def __init__(self, app: StoreHost) -> None:
        self._app = app

    async def decided(
        self,
        kind: str,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
    ) -> list[ReviewRequest]:
        """Decided requests of `kind` (only those in `status`, if given), the latest
        decision first."""
        rows = await self._app.store.list_reviews(
            kind, status, None, workflow, limit, latest_decided=True
        )
        return list(rows)

    async def waiting(self, kinds: Sequence[str], queue: str) -> int:
        """How many requests of these kinds are pending in `queue`."""
        return await self._app.store.count_reviews(kinds, "pending", queue)

    async def of_run(
        self, run_id: str, limit: int = 10_000
    ) -> tuple[list[ReviewRequest], list[Escalation]]:
        """Every request (approvals, reviews, samples) and escalation run `run_id` made."""
        rows = await self._app.store.list_reviews(limit=limit, run_id=run_id)
        escalations = await self._app.store.list_escalations(None, None, limit, run_id=run_id)
        return list(rows), escalations
