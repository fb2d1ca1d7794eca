"""Keel's store as the record of Temporal runs: the run row, its journal, its usage.

Temporal's history is what a run replays from; Keel's store keeps what everything
around the run reads (`keel runs/show/trace/costs`, the console): the run row, written
when the run is started, a journal entry per effect written by the activity that ran
it (so it is written once per attempt, never by a replay: traces built from it have no
duplicate spans), and the run's end, written when Keel learns it (`result()`, `keel
runs`). The row is leased to `OWNER` for good, so no Keel engine worker ever claims it.

Example:
    await open_run(app.store, run_id, "triage", data, tenant=None, session=None)
    await record(app.store, Entry(run_id, "lookup#0", "", 0, StepKind.TOOL, ...))
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError, KeelError, StoreError
from keel.store import StepWrite, UnitOfWork, Usage
from keel.types import RunInfo, StepKind, StepRecord, StepStatus, StructuredError

if TYPE_CHECKING:
    from keel.store import Store

OWNER = "temporal"  # the lease owner of every run Temporal executes
_FOREVER = 100 * 365 * 86400.0  # Temporal holds the run's lease: it never expires
_INLINE = 256 * 1024  # larger outputs go out of line (the store's blob table)
_log = logging.getLogger("keel.temporal")


def on_temporal(run: RunInfo) -> bool:
    """Whether Temporal executes `run` (its row is leased to Temporal)."""
    return run.lease_owner == OWNER


async def open_run(
    store: Store,
    run_id: str,
    workflow: str,
    data: bytes,
    *,
    tenant: str | None,
    session: str | None,
) -> bool:
    """Record run `run_id` as started on Temporal; False when the store already had it."""
    _, created = await store.create_run(run_id, workflow, data, time.time(), tenant, session)
    if not created:
        return False
    claimed = await store.claim(OWNER, _FOREVER, 1, [workflow], [run_id])
    if not claimed:
        raise ConfigError(
            f"run {run_id!r} was taken by a Keel engine worker before Temporal could hold "
            "it: do not run Keel's own workers for workflows hosted on Temporal against "
            "the same store",
            run_id=run_id,
        )
    return True


@dataclass(slots=True)
class Entry:
    """One journal entry an activity writes for the effect it ran."""

    run_id: str
    key: str
    scope: str
    position: int
    kind: StepKind
    name: str
    digest: str
    started: float
    attempts: int
    data: bytes | None = None  # the output's JSON
    error: StructuredError | None = None
    usage: Usage | None = None
    input: Any = None
    fallback: str | None = None
    pending: bool = False  # an intent, or a failed attempt that will be retried
    out_of_line: bool = False  # the output goes to the blob table whatever its size


async def record(store: Store, entry: Entry, *, strict: bool = False) -> None:
    """Write `entry` to Keel's store. Temporal's history holds the outcome whatever
    happens here, so a store that fails is logged, never the step's failure; `strict`
    raises instead (an intent: the effect must not run unrecorded)."""
    rec = StepRecord(
        run_id=entry.run_id,
        key=entry.key,
        scope=entry.scope,
        position=entry.position,
        kind=entry.kind,
        name=entry.name,
        digest=entry.digest,
        status=_status(entry),
        error=entry.error,
        attempts=entry.attempts,
        started_at=entry.started,
        ended_at=time.time(),
        input=entry.input,
        fallback=entry.fallback,
    )
    data = entry.data
    write = StepWrite(rec, data, usage=entry.usage)
    if data is not None and (entry.out_of_line or len(data) > _INLINE):
        rec.blob = hashlib.sha256(data).hexdigest()
        write = StepWrite(rec, None, data, usage=entry.usage)
    try:
        await store.commit(UnitOfWork(entry.run_id, None, steps=[write]))
    except (StoreError, KeelError, OSError) as exc:
        if strict:
            raise
        _log.warning(
            "step %s of run %s ran on Temporal but could not be written to Keel's store "
            "(keel show/trace/costs will miss it): %s",
            entry.key,
            entry.run_id,
            exc,
        )


def _status(entry: Entry) -> StepStatus:
    if entry.pending:
        return StepStatus.PENDING
    if entry.error is None or (entry.fallback is not None and entry.data is not None):
        return StepStatus.OK  # (a failure whose fallback supplied the value: it stands)
    return StepStatus.ERROR


async def end_run(store: Store, info: RunInfo, result_json: bytes | None) -> bool:
    """Record the end Temporal reported for `info`; True when this call recorded it
    (False: not ended, ended already, or not a run Keel started on Temporal)."""
    if not info.status.terminal:
        return False
    from keel.errors import LeaseLost

    try:
        await store.finish_run(
            info.id, OWNER, info.status, result_json, info.error, None, [], time.time()
        )
    except LeaseLost:
        return False
    return True


async def end_with_state(
    store: Store, info: RunInfo, result_json: bytes | None, state_json: bytes | None
) -> bool:
    """`end_run` with the run's typed state (JSON), which only the worker has; True when
    this call recorded the end (the other writer then loses Temporal's lease)."""
    if not info.status.terminal:
        return False
    from keel.errors import LeaseLost

    try:
        await store.finish_run(
            info.id, OWNER, info.status, result_json, info.error, state_json, [], time.time()
        )
    except LeaseLost:
        return False
    return True


__all__ = ["OWNER", "Entry", "end_run", "end_with_state", "on_temporal", "open_run", "record"]
