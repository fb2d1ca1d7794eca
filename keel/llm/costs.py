"""`Costs`: what model calls cost, as the console and `keel costs` read it.

The gateway meters every call into the store with its step (`keel.llm.facade`); this
service is how the layers on top of the App read those meters back, so the server and
CLI never query the store themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel.host import StoreHost
    from keel.store import UsageGroup

GROUPS = ("run", "workflow", "tenant", "model", "step")


class Costs:
    """Metered tokens and USD of an App's model calls.

    Example:
        costs = Costs(app)
        print(await costs.spent(run_id=handle.run_id))
        for group in await costs.report("workflow"):
            print(group.key, group.cost_usd)
    """

    def __init__(self, app: StoreHost) -> None:
        self._app = app

    async def spent(
        self,
        run_id: str | None = None,
        workflow: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
    ) -> float:
        """Metered cost in USD of the calls matching every filter given."""
        return await self._app.store.spent(run_id, workflow, tenant, since)

    async def report(
        self,
        by: str,
        workflow: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
    ) -> list[UsageGroup]:
        """Calls, tokens and cost grouped `by` one of `GROUPS`, largest cost first."""
        return await self._app.store.usage_report(by, workflow=workflow, tenant=tenant, since=since)

    async def per_run(
        self, workflow: str | None = None, since: float | None = None
    ) -> dict[str, float]:
        """Cost in USD per run id (runs without model calls are absent)."""
        rows = await self.report("run", workflow=workflow, since=since)
        return {str(g.key): float(g.cost_usd or 0.0) for g in rows}
