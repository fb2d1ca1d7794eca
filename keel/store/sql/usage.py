"""Metered usage (model calls' tokens and cost, budgets, cost reports) and the
response cache (the `keel.store.usage.UsageStore` queries). Usage rows are written with
the journal entry they meter (`writes.insert_steps`, called by `runs.commit`).
"""

from __future__ import annotations

from typing import Any

from keel.errors import ConfigError
from keel.store.records import PURGED_RUNS, UsageGroup
from keel.store.sql.core import Session

_GROUP_COLS = {
    "run": "run_id",
    "workflow": "workflow",
    "tenant": "tenant",
    "model": "model",
    "step": "run_id || ':' || step_key",
}


def spent(
    s: Session,
    run_id: str | None,
    workflow: str | None,
    tenant: str | None,
    since: float | None,
) -> float:
    """Total cost of the usage matching the filters."""
    if run_id is None and since is not None and since % 86400 == 0:
        scope = f"wf:{workflow}" if tenant is None else f"tenant:{tenant}"
        if (workflow is None) != (tenant is None):  # one whole-days total: kept running
            row = s.execute(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM usage_daily WHERE scope=? AND day>=?",
                (scope, since),
            )
            return float(row.fetchone()[0])
    where, args = _usage_filter(run_id, workflow, tenant, since)
    row = s.execute(f"SELECT COALESCE(SUM(cost_usd), 0) FROM usage{where}", args)
    return float(row.fetchone()[0])


def usage_report(
    s: Session,
    group_by: str,
    workflow: str | None,
    tenant: str | None,
    since: float | None,
) -> list[UsageGroup]:
    """Usage totals grouped by `group_by`, the costliest first."""
    column = _GROUP_COLS.get(group_by)
    if column is None:
        raise ConfigError(
            f"cannot group costs by {group_by!r}; use run, workflow, tenant, model or step"
        )
    where, args = _usage_filter(None, workflow, tenant, since)
    rows = s.execute(
        f"SELECT {column}, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost_usd),"
        f" SUM(cache_hit) FROM usage{where} GROUP BY 1 ORDER BY 5 DESC",
        args,
    ).fetchall()
    rows = _with_rollup(s, rows, group_by, workflow, tenant, since)
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


def cache_get(s: Session, key: str, now: float) -> str | None:
    """The cached value of `key` unless it expired."""
    row = s.execute(
        "SELECT value FROM kv_cache WHERE key=? AND (expires_at IS NULL OR expires_at>?)",
        (key, now),
    ).fetchone()
    return s.open(row[0], "kv_cache.value", key) if row else None


def cache_put(s: Session, key: str, value: str, expires_at: float | None) -> None:
    """Cache `value` under `key` until `expires_at` (None: for good)."""
    with s.write():
        s.execute(
            "INSERT INTO kv_cache (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key)"
            " DO UPDATE SET value=excluded.value, expires_at=excluded.expires_at",
            (key, s.seal(value, "kv_cache.value", key), expires_at),
        )


def cache_purge(s: Session, now: float) -> int:
    """Drop expired cache entries; how many."""
    with s.write():
        cur = s.execute(
            "DELETE FROM kv_cache WHERE expires_at IS NOT NULL AND expires_at<=?", (now,)
        )
    return cur.rowcount


def _with_rollup(
    s: Session,
    rows: list[tuple[Any, ...]],
    group_by: str,
    workflow: str | None,
    tenant: str | None,
    since: float | None,
) -> list[tuple[Any, ...]]:
    """Cost report rows with purged runs' usage added from its per-day totals: by run
    or step it is one `(purged runs)` row; a day counts only if it starts at or after
    `since` (its hours are gone)."""
    key = {"workflow": "workflow", "tenant": "NULLIF(tenant, '')", "model": "model"}.get(group_by)
    where, args = _usage_filter(None, workflow, tenant, since, since_col="day")
    if key is None:  # one row for every purged run
        sql = (
            "SELECT CAST(? AS TEXT), SUM(calls), SUM(input_tokens), SUM(output_tokens),"
            f" SUM(cost_usd), SUM(cache_hits) FROM usage_rollup{where}"
        )
        rolled = [r for r in s.execute(sql, [PURGED_RUNS, *args]).fetchall() if r[1]]
    else:
        rolled = s.execute(
            f"SELECT {key}, SUM(calls), SUM(input_tokens), SUM(output_tokens), SUM(cost_usd),"
            f" SUM(cache_hits) FROM usage_rollup{where} GROUP BY {key}",
            args,
        ).fetchall()
    if not rolled:
        return rows
    merged = {r[0]: list(r) for r in rows}
    for r in rolled:
        have = merged.setdefault(r[0], [r[0], 0, 0, 0, 0.0, 0])
        for i in range(1, 6):
            have[i] = (have[i] or 0) + (r[i] or 0)
    return sorted((tuple(v) for v in merged.values()), key=lambda v: -(v[4] or 0))
