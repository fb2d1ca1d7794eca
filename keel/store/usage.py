"""`UsageStore`: metered usage of model calls (budgets, cost reports) and the response
cache. Usage is written with the step that metered it (`StepWrite.usage`, committed by
`JournalStore.commit`)."""

from __future__ import annotations

import abc

from keel.store.records import UsageGroup


class UsageStore(abc.ABC):
    """Usage totals, cost reports and the response cache.

    Example:
        today = await store.spent(workflow="triage", since=day_start)
        await store.cache_put("k", "v", expires_at=time.time() + 60)
    """

    @abc.abstractmethod
    async def spent(
        self,
        run_id: str | None = None,
        workflow: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
    ) -> float:
        """Metered cost in USD matching every filter given (purged runs' usage included
        when counted by whole days)."""

    @abc.abstractmethod
    async def usage_report(
        self,
        group_by: str,
        workflow: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
    ) -> list[UsageGroup]:
        """Usage grouped by run, workflow, tenant, model or step, the costliest first;
        purged runs' usage is kept as one `PURGED_RUNS` group (by run or step). Raises
        `ConfigError` for another `group_by`."""

    @abc.abstractmethod
    async def cache_get(self, key: str, now: float) -> str | None:
        """The cached value, or None if absent or expired at `now`."""

    @abc.abstractmethod
    async def cache_put(self, key: str, value: str, expires_at: float | None) -> None:
        """Store (or replace) a cached value; `expires_at` None: it never expires."""

    @abc.abstractmethod
    async def cache_purge(self, now: float) -> int:
        """Delete entries expired at `now`; how many."""
