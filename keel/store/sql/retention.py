"""Retention (docs/storage.md): purging ended runs with everything that is theirs,
purging what expired, and counting a purge dry (the `keel.store.maintenance`
queries; giving freed space back is the backend's own).
"""

from __future__ import annotations

import time
from typing import Any

from keel.store.records import Purged, PurgeScope
from keel.store.sql.core import Session
from keel.store.sql.dialect import marks

_OF_RUNS = ("usage", "steps", "signals", "spans", "reviews", "escalations")
# Claim checks (payloads kept out of a Temporal history, keel/backends/temporal/claims.py)
# are blobs keyed `claim:<run id>:<sha256 hex>`: the run id inside the key ties them to
# their run with no table of their own. Portable SQL for "the run id of a claim blob":
_CLAIM_RUN = "substr(digest, 1, 6) = 'claim:' AND substr(digest, 7, length(digest) - 71)"
_CACHE = " FROM kv_cache WHERE expires_at IS NOT NULL AND expires_at<=?"
# Expired session values and write receipts (ctx.session), on the database clock.
_SESSIONS = " FROM session_kv WHERE expires_at IS NOT NULL AND expires_at<={now}"


def _ended(scope: PurgeScope) -> tuple[str, list[Any]]:
    """The query for the ids of the runs in `scope` (index `runs_ended`): what a purge
    takes and what a dry run counts are the same runs."""
    # `{noindex}status`: not by `runs_ready`, which would walk every ended run.
    statuses = marks(len(scope.statuses))
    sql = f"SELECT id FROM runs WHERE ended_at<? AND {{noindex}}status IN ({statuses})"
    args: list[Any] = [scope.ended_before, *(s.value for s in scope.statuses)]
    if scope.workflow is not None:
        sql += " AND workflow=?"
        args.append(scope.workflow)
    return sql, args


def _purgeable(s: Session, scope: PurgeScope, limit: int) -> list[str]:
    """Ids of ended runs in `scope`, the longest ended first."""
    sql, args = _ended(scope)
    return [r[0] for r in s.execute(sql + " ORDER BY ended_at LIMIT ?", (*args, limit))]


def purge_runs(s: Session, scope: PurgeScope, limit: int) -> Purged:
    """Delete up to `limit` ended runs in `scope` with everything that is theirs; their
    usage is kept as per-day totals."""
    if not _purgeable(s, scope, 1):
        return Purged()  # nothing to do: no write lock taken
    with s.scrubbing(), s.write():
        ids = _purgeable(s, scope, limit)  # again: others may have purged them
        if not ids:
            return Purged()
        m = marks(len(ids))
        blobs = [
            r[0]
            for r in s.execute(
                f"SELECT DISTINCT blob FROM steps WHERE run_id IN ({m}) AND blob IS NOT NULL",
                ids,
            )
        ]
        s.execute(
            "INSERT INTO usage_rollup (day, workflow, tenant, model, calls, input_tokens,"
            " output_tokens, cost_usd, cache_hits)"
            " SELECT {day:created_at}, workflow,"
            " COALESCE(tenant, ''), model, COUNT(*), SUM(input_tokens), SUM(output_tokens),"
            f" SUM(cost_usd), SUM(cache_hit) FROM usage WHERE run_id IN ({m})"
            " GROUP BY 1, 2, 3, 4 ON CONFLICT (day, workflow, tenant, model) DO UPDATE SET"
            " calls = usage_rollup.calls + excluded.calls,"
            " input_tokens = usage_rollup.input_tokens + excluded.input_tokens,"
            " output_tokens = usage_rollup.output_tokens + excluded.output_tokens,"
            " cost_usd = usage_rollup.cost_usd + excluded.cost_usd,"
            " cache_hits = usage_rollup.cache_hits + excluded.cache_hits",
            ids,
        )
        out = Purged(runs=len(ids))
        for table in _OF_RUNS:
            cur = s.execute(f"DELETE FROM {table} WHERE run_id IN ({m})", ids)
            setattr(out, table, cur.rowcount)
        s.execute(f"DELETE FROM runs WHERE id IN ({m})", ids)
        out.blobs += s.execute(f"DELETE FROM blobs WHERE {_CLAIM_RUN} IN ({m})", ids).rowcount
        for digest in blobs:  # content-addressed: another run's step may share it
            out.blobs += s.execute(
                "DELETE FROM blobs WHERE digest=?"
                " AND NOT EXISTS (SELECT 1 FROM steps WHERE blob=?)",
                (digest, digest),
            ).rowcount
    return out


def _expired(scope: PurgeScope) -> tuple[str, list[Any]]:
    """The sampler's counters of days before the cutoff's (UTC) day."""
    day = time.strftime("%Y-%m-%d", time.gmtime(scope.ended_before))
    sql, args = " FROM sample_counts WHERE day<?", [day]
    if scope.workflow is not None:
        sql += " AND workflow=?"
        args.append(scope.workflow)
    return sql, args


def purge_expired(s: Session, scope: PurgeScope, now: float) -> Purged:
    """Delete the sampler's old counters, expired cache entries and session values."""
    samples, args = _expired(scope)
    (some,) = s.execute(
        f"SELECT EXISTS (SELECT 1{samples}) OR EXISTS (SELECT 1{_CACHE})"
        f" OR EXISTS (SELECT 1{_SESSIONS})",
        (*args, now),
    ).fetchone()
    if not some:
        return Purged()
    with s.scrubbing(), s.write():
        return Purged(
            sample_counts=s.execute(f"DELETE{samples}", args).rowcount,
            cache=s.execute(f"DELETE{_CACHE}", (now,)).rowcount,
            sessions=s.execute(f"DELETE{_SESSIONS}").rowcount,
        )


def count_purge(s: Session, scope: PurgeScope, now: float) -> Purged:
    """What `purge_runs` and `purge_expired` would delete, counted."""
    doomed, args = _ended(scope)
    of_runs = [
        f"(SELECT COUNT(*) FROM {t} WHERE run_id IN (SELECT id FROM doomed))"
        for t in ("steps", "signals", "spans", "reviews", "escalations", "usage")
    ]
    samples, sample_args = _expired(scope)
    row = s.execute(
        f"WITH doomed AS MATERIALIZED ({doomed}) SELECT (SELECT COUNT(*) FROM doomed),"
        f" {', '.join(of_runs)},"
        " (SELECT COUNT(*) FROM (SELECT DISTINCT blob AS d FROM steps"
        "  WHERE run_id IN (SELECT id FROM doomed) AND blob IS NOT NULL) AS b"
        "  WHERE NOT EXISTS (SELECT 1 FROM steps s WHERE s.blob = b.d"
        "  AND s.run_id NOT IN (SELECT id FROM doomed))),"
        f" (SELECT COUNT(*){samples}),"
        f" (SELECT COUNT(*){_CACHE}),"
        f" (SELECT COUNT(*){_SESSIONS}),"
        f" (SELECT COUNT(*) FROM blobs WHERE {_CLAIM_RUN} IN (SELECT id FROM doomed))",
        (*args, *sample_args, now),
    ).fetchone()
    names = ("runs", "steps", "signals", "spans", "reviews", "escalations", "usage")
    out = Purged(**dict(zip(names, row[:7], strict=True)))
    out.blobs, out.sample_counts, out.cache, out.sessions = row[7], row[8], row[9], row[10]
    out.blobs += row[11]
    return out
