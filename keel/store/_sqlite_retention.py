"""The SQLite store's retention (docs/storage.md): purging ended runs with everything
that is theirs, purging what expired, counting a purge dry, and giving freed space back.

The `keel.store.maintenance.MaintenanceStore` of `keel.store.sqlite.SQLiteStore`, with
`_sqlite_rekey`.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from keel.store._sqlite_core import SQLiteCore
from keel.store.base import Purged, PurgeScope, StoreSpace


class SQLiteRetention(SQLiteCore):
    """Purges, and the store's space (docs/storage.md)."""

    @staticmethod
    def _ended(scope: PurgeScope) -> tuple[str, list[Any]]:
        """The query for the ids of the runs in `scope` (index `runs_ended`): what a
        purge takes and what a dry run counts are the same runs."""
        marks = ",".join("?" * len(scope.statuses))
        # `+status`: not by `runs_ready`, which would walk every ended run of the store.
        sql = f"SELECT id FROM runs WHERE ended_at<? AND +status IN ({marks})"
        args: list[Any] = [scope.ended_before, *(s.value for s in scope.statuses)]
        if scope.workflow is not None:
            sql += " AND workflow=?"
            args.append(scope.workflow)
        return sql, args

    def _purgeable(self, db: sqlite3.Connection, scope: PurgeScope, limit: int) -> list[str]:
        """Ids of ended runs in `scope`, the longest ended first."""
        sql, args = self._ended(scope)
        rows = db.execute(sql + " ORDER BY ended_at LIMIT ?", (*args, limit)).fetchall()
        return [r[0] for r in rows]

    async def purge_runs(self, scope: PurgeScope, limit: int = 100) -> Purged:
        if not self._purgeable(self._db, scope, 1):
            return Purged()  # nothing to do: no write lock taken
        with self._secure_delete(), self._tx() as db:
            ids = self._purgeable(db, scope, limit)  # again: others may have purged them
            if not ids:
                return Purged()
            marks = ",".join("?" * len(ids))
            blobs = [
                r[0]
                for r in db.execute(
                    f"SELECT DISTINCT blob FROM steps WHERE run_id IN ({marks})"
                    " AND blob IS NOT NULL",
                    ids,
                )
            ]
            db.execute(
                "INSERT INTO usage_rollup (day, workflow, tenant, model, calls, input_tokens,"
                " output_tokens, cost_usd, cache_hits)"
                " SELECT CAST(created_at / 86400 AS INTEGER) * 86400, workflow,"
                " COALESCE(tenant, ''), model, COUNT(*), SUM(input_tokens), SUM(output_tokens),"
                f" SUM(cost_usd), SUM(cache_hit) FROM usage WHERE run_id IN ({marks})"
                " GROUP BY 1, 2, 3, 4 ON CONFLICT (day, workflow, tenant, model) DO UPDATE SET"
                " calls = calls + excluded.calls,"
                " input_tokens = input_tokens + excluded.input_tokens,"
                " output_tokens = output_tokens + excluded.output_tokens,"
                " cost_usd = cost_usd + excluded.cost_usd,"
                " cache_hits = cache_hits + excluded.cache_hits",
                ids,
            )
            out = Purged(runs=len(ids))
            for table in ("usage", "steps", "signals", "spans", "reviews", "escalations"):
                cur = db.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", ids)
                setattr(out, table, cur.rowcount)
            db.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
            for digest in blobs:  # content-addressed: another run's step may share it
                out.blobs += db.execute(
                    "DELETE FROM blobs WHERE digest=?"
                    " AND NOT EXISTS (SELECT 1 FROM steps WHERE blob=?)",
                    (digest, digest),
                ).rowcount
        return out

    @staticmethod
    def _expired(scope: PurgeScope) -> tuple[str, list[Any]]:
        """The sampler's counters of days before the cutoff's (UTC) day."""
        day = time.strftime("%Y-%m-%d", time.gmtime(scope.ended_before))
        sql, args = " FROM sample_counts WHERE day<?", [day]
        if scope.workflow is not None:
            sql += " AND workflow=?"
            args.append(scope.workflow)
        return sql, args

    async def purge_expired(self, scope: PurgeScope, now: float) -> Purged:
        samples, args = self._expired(scope)
        cache = " FROM kv_cache WHERE expires_at IS NOT NULL AND expires_at<=?"
        (some,) = self._db.execute(
            f"SELECT EXISTS (SELECT 1{samples}) OR EXISTS (SELECT 1{cache})", (*args, now)
        ).fetchone()
        if not some:
            return Purged()
        with self._secure_delete(), self._tx() as db:
            return Purged(
                sample_counts=db.execute(f"DELETE{samples}", args).rowcount,
                cache=db.execute(f"DELETE{cache}", (now,)).rowcount,
            )

    async def count_purge(self, scope: PurgeScope, now: float) -> Purged:
        doomed, args = self._ended(scope)
        of_runs = [
            f"(SELECT COUNT(*) FROM {t} WHERE run_id IN doomed)"
            for t in ("steps", "signals", "spans", "reviews", "escalations", "usage")
        ]
        samples, sample_args = self._expired(scope)
        row = self._db.execute(
            f"WITH doomed AS MATERIALIZED ({doomed}) SELECT (SELECT COUNT(*) FROM doomed),"
            f" {', '.join(of_runs)},"
            " (SELECT COUNT(*) FROM (SELECT DISTINCT blob AS d FROM steps"
            "  WHERE run_id IN doomed AND blob IS NOT NULL)"
            "  WHERE NOT EXISTS (SELECT 1 FROM steps s WHERE s.blob = d"
            "  AND s.run_id NOT IN doomed)),"
            f" (SELECT COUNT(*){samples}),"
            " (SELECT COUNT(*) FROM kv_cache WHERE expires_at IS NOT NULL AND expires_at<=?)",
            (*args, *sample_args, now),
        ).fetchone()
        names = ("runs", "steps", "signals", "spans", "reviews", "escalations", "usage")
        out = Purged(**dict(zip(names, row[:7], strict=True)))
        out.blobs, out.sample_counts, out.cache = row[7], row[8], row[9]
        return out

    def _space(self) -> StoreSpace:
        def pragma(name: str) -> int:
            return int(self._db.execute(f"PRAGMA {name}").fetchone()[0])

        size = pragma("page_size")
        return StoreSpace(
            size_bytes=pragma("page_count") * size,
            free_bytes=pragma("freelist_count") * size,
            shrinks=pragma("auto_vacuum") == 2,  # INCREMENTAL
        )

    async def reclaim_space(self, full: bool = False) -> StoreSpace:
        if full:
            # VACUUM rewrites the file; the mode set just before takes effect with it.
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("VACUUM")
        elif (space := self._space()).shrinks and space.free_bytes:
            # One statement frees every free page, one page per step: executescript runs
            # it to the end (execute() would stop after the first page).
            self._db.executescript("PRAGMA incremental_vacuum;")
        # Copy what can be copied from the WAL now, so the file shrinks and the zeroed
        # pages of deleted rows reach it; never waits for readers.
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return self._space()
