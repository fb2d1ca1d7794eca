"""The SQLite store's metered usage (model calls' tokens and cost, budgets, cost reports)
and the response cache.

The `keel.store.usage.UsageStore` of `keel.store.sqlite.SQLiteStore`. Usage rows are
written with the journal entry they meter (`SQLiteCore._insert`, called by `commit`).
"""

from __future__ import annotations

from typing import Any

from keel.errors import ConfigError
from keel.store._sqlite_core import SQLiteCore
from keel.store.base import PURGED_RUNS, UsageGroup


class SQLiteUsage(SQLiteCore):
    """Metered usage and the response cache."""

    async def spent(
        self,
        run_id: str | None = None,
        workflow: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
    ) -> float:
        if run_id is None and since is not None and since % 86400 == 0:
            scope = f"wf:{workflow}" if tenant is None else f"tenant:{tenant}"
            if (workflow is None) != (tenant is None):  # one whole-days total: kept running
                row = self._db.execute(
                    "SELECT COALESCE(SUM(cost_usd), 0) FROM usage_daily WHERE scope=? AND day>=?",
                    (scope, since),
                )
                return float(row.fetchone()[0])
        where, args = self._usage_filter(run_id, workflow, tenant, since)
        row = self._db.execute(f"SELECT COALESCE(SUM(cost_usd), 0) FROM usage{where}", args)
        return float(row.fetchone()[0])

    async def usage_report(
        self,
        group_by: str,
        workflow: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
    ) -> list[UsageGroup]:
        column = {
            "run": "run_id",
            "workflow": "workflow",
            "tenant": "tenant",
            "model": "model",
            "step": "run_id || ':' || step_key",
        }.get(group_by)
        if column is None:
            raise ConfigError(
                f"cannot group costs by {group_by!r}; use run, workflow, tenant, model or step"
            )
        where, args = self._usage_filter(None, workflow, tenant, since)
        rows = self._db.execute(
            f"SELECT {column}, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost_usd),"
            f" SUM(cache_hit) FROM usage{where} GROUP BY 1 ORDER BY 5 DESC",
            args,
        ).fetchall()
        rows = self._with_rollup(rows, group_by, workflow, tenant, since)
        return [
            UsageGroup(
                by=group_by,
                key=r[0],
                calls=r[1],
                input_tokens=r[2],
                output_tokens=r[3],
                cost_usd=r[4],
                cache_hits=r[5],
            )
            for r in rows
        ]

    @staticmethod
    def _usage_filter(
        run_id: str | None,
        workflow: str | None,
        tenant: str | None,
        since: float | None,
        since_col: str = "created_at",  # `day` in the per-day totals (usage_rollup)
    ) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        for col, val in (("run_id", run_id), ("workflow", workflow), ("tenant", tenant)):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        if since is not None:
            where.append(f"{since_col}>=?")
            args.append(since)
        return (" WHERE " + " AND ".join(where) if where else ""), args

    async def cache_get(self, key: str, now: float) -> str | None:
        row = self._db.execute(
            "SELECT value FROM kv_cache WHERE key=? AND (expires_at IS NULL OR expires_at>?)",
            (key, now),
        ).fetchone()
        return self._open(row[0], "kv_cache.value", key) if row else None

    async def cache_put(self, key: str, value: str, expires_at: float | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO kv_cache (key, value, expires_at) VALUES (?, ?, ?)",
                (key, self._seal(value, "kv_cache.value", key), expires_at),
            )

    async def cache_purge(self, now: float) -> int:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM kv_cache WHERE expires_at IS NOT NULL AND expires_at<=?", (now,)
            )
        return cur.rowcount

    def _with_rollup(
        self,
        rows: list[tuple[Any, ...]],
        group_by: str,
        workflow: str | None,
        tenant: str | None,
        since: float | None,
    ) -> list[tuple[Any, ...]]:
        """Cost report rows with purged runs' usage added from its per-day totals: by run
        or step it is one `(purged runs)` row; a day counts only if it starts at or after
        `since` (its hours are gone)."""
        key = {"workflow": "workflow", "tenant": "NULLIF(tenant, '')", "model": "model"}.get(
            group_by, "?"
        )
        where, args = self._usage_filter(None, workflow, tenant, since, since_col="day")
        rolled = self._db.execute(
            f"SELECT {key}, SUM(calls), SUM(input_tokens), SUM(output_tokens), SUM(cost_usd),"
            f" SUM(cache_hits) FROM usage_rollup{where} GROUP BY 1",
            ([PURGED_RUNS] if key == "?" else []) + args,
        ).fetchall()
        if not rolled:
            return rows
        merged = {r[0]: list(r) for r in rows}
        for r in rolled:
            have = merged.setdefault(r[0], [r[0], 0, 0, 0, 0.0, 0])
            for i in range(1, 6):
                have[i] = (have[i] or 0) + (r[i] or 0)
        return sorted((tuple(v) for v in merged.values()), key=lambda v: -(v[4] or 0))
