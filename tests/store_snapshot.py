"""Everything a store holds, as its interfaces read it back: to prove that a refused or
dry-run command wrote nothing, on any backend (not only by comparing SQLite files).

Example:
    before = snapshot_at(url)
    ...  # a command that must change nothing
    assert snapshot_at(url) == before
"""

from __future__ import annotations

import asyncio
import dataclasses

from keel.store import PurgeScope, RunFilter, Store, open_store
from keel.types import RunInfo
from tests.backends import backend

_ALL = 2**31  # "no limit" for the list calls
_GROUPS = ("run", "workflow", "tenant", "model", "step")


async def snapshot(store: Store) -> list[str]:
    """One line per thing the store's interfaces read back: runs, their journals, blobs
    and spans, reviews, escalations, the audit log, usage, workers, users, and what a
    purge of everything would count (cache entries and queued signals of ended runs)."""
    lines: list[str] = []
    runs: list[RunInfo] = await store.list_runs(RunFilter(limit=_ALL))
    for run in sorted(runs, key=lambda r: r.id):
        lines.append(f"run {run.model_dump_json()}")
        for rec in sorted(await store.load_steps(run.id), key=lambda s: s.key):
            lines.append(f"step {rec.model_dump_json()}")
            if rec.blob:
                lines.append(f"blob {rec.blob} {len(await store.load_blob(rec.blob))}")
        lines += [f"span {s!r}" for s in await store.load_spans(_trace(run.id))]
    lines += [f"review {r.model_dump_json()}" for r in await store.list_reviews(limit=_ALL)]
    lines += [f"escalation {e.model_dump_json()}" for e in await store.list_escalations(limit=_ALL)]
    lines += [f"audit {dataclasses.astuple(e)!r}" for e in await store.audit_log(limit=_ALL)]
    for group in _GROUPS:
        lines += [f"usage {group} {u!r}" for u in await store.usage_report(group)]
    lines += [f"worker {w!r}" for w in await store.list_workers()]
    lines += [f"user {u!r}" for u in await store.list_users()]
    # a fixed, far `now`: every cache entry with an expiry counts, whenever this runs
    lines.append(f"purgeable {await store.count_purge(_everything(), float(_ALL))!r}")
    return lines


def snapshot_at(url: str) -> list[str]:
    """`snapshot` of the store at `url`, from sync code (no event loop running), plus
    every row the backend can list (tests/backends.py: a queued signal of a live run is
    in no interface's answer)."""

    async def read() -> list[str]:
        store = open_store(url)
        try:
            return await snapshot(store)
        finally:
            await store.close()

    rows = backend().rows
    return asyncio.run(read()) + (rows(url) if rows is not None else [])


def _trace(run_id: str) -> str:
    from keel.observe.ids import hex_trace, trace_id

    return hex_trace(trace_id(run_id))


def _everything() -> PurgeScope:
    return PurgeScope(ended_before=float(_ALL))
