"""A Temporal run's end in Keel's store: written once, by whichever path gets there first.

- The worker: when the generic workflow's run ends (a result, a failure carrying
  Keel's structured error, or Temporal's cancellation), its last act hands the end
  (`write_end`, `write_cancelled`) to the worker's own event loop (`end_writer`),
  which records it with the run's typed state and the steps the workflow decided
  (timers, signal waits, values: decided.py), so a run nobody awaits or reads still
  ends in the store, its claims become purgeable, its spans are exported and its
  drift monitors observe it. Not a step: the write leaves no event in history and
  costs the run no round trip (a replay does not write it again). Runs recorded
  before that (`keel.end.direct`) wrote it with the local activity `keel.end`, and
  replay so.
- The client: `result()`, or a read of a run that Temporal reports ended
  (`record_end`). Termination runs no workflow code: only this path records it; it
  also covers a worker that could not write the end (its store down, or killed first).

Both go through `record_end`: the store's end is written under Temporal's lease, so
the second writer loses it and runs no follow-up (spans and drift happen once).

Example:
    await record_end(app, info, result_json)
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from keel.backends.temporal.decided import carried, step_writes
from keel.backends.temporal.mirror import end_with_state
from keel.types import RunInfo, RunStatus, StructuredError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from keel.app import App
    from keel.backends.temporal.port import TemporalExecution
    from keel.store import StepWrite

END_ACTIVITY = "keel.end"  # the local activity that writes a run's end from the worker
# Histories from before `keel.end` existed replay without it (Temporal's versioning).
_PATCH = "keel.end"
# Since this patch the end is handed to the worker's loop (`end_writer`): histories
# with the `keel.end` local activity replay with it.
_DIRECT = "keel.end.direct"
# Runs cancelled before the worker wrote a cancelled end replay as they ended then.
_CANCEL_PATCH = "keel.end.cancelled"
_log = logging.getLogger("keel.temporal")


async def record_end(
    app: App,
    info: RunInfo,
    result_json: bytes | None,
    state_json: bytes | None = None,
    writes: Sequence[StepWrite] = (),
) -> bool:
    """Record `info`'s end (with entries `writes`, in one transaction); True when this
    call recorded it (and ran the follow-ups)."""
    if not await end_with_state(app.store, info, result_json, state_json, writes):
        return False
    from keel.drift.observer import OBSERVED, monitors_of
    from keel.hitl.sampling import sample_ended

    await sample_ended(app, info)  # a sampled review, as Keel's engine's worker opens one
    from keel.observe.export import OTLPExport

    monitors = monitors_of(app, info.workflow) if info.status in OBSERVED else ()
    if not monitors and OTLPExport.from_env() is None:
        return True  # nothing follows: the row as ended need not be read back
    stored = await app.store.get_run(info.id)
    if stored is None:
        return True
    from keel.backends.temporal.tracing import export_ended

    await export_ended(app, stored)
    if monitors:
        await app.drift.observer.observe(stored.id, stored.workflow, monitors)
    return True


async def write_end(
    port: TemporalExecution, result: Any, error: StructuredError | None = None
) -> None:
    """Workflow code, the last act of a run that ends: its end to Keel's store (`_write`).
    It never changes how the run ends: a store that cannot take it leaves the end to
    the client path (`record_end`)."""
    from temporalio import workflow

    if not workflow.patched(_DIRECT) and not workflow.patched(_PATCH):
        return  # a run that ended before keel.end existed, replayed: it had no such step
    status = RunStatus.FAILED if error is not None else RunStatus.SUCCEEDED
    await _write(port, status, result, error)


def run_cancelled(exc: BaseException) -> bool:
    """Workflow code: whether `exc` is Temporal's cancellation of the run, which ends the
    run CANCELLED (`write_cancelled`); a step or branch lets it through rather than make
    it its own failure. False for a cancel nobody requested of the run (an eviction's,
    or one inside its own code), and for a run replayed that was cancelled before Keel
    ended runs so (it ends as it did then)."""
    from temporalio import workflow
    from temporalio.exceptions import is_cancelled_exception

    if workflow.cancellation_reason() is None or not is_cancelled_exception(exc):
        return False
    return workflow.patched(_CANCEL_PATCH)


async def write_cancelled(port: TemporalExecution, exc: BaseException) -> bool:
    """Workflow code, where the run's code raised `exc`: when that is Temporal's
    cancellation of the run (`run_cancelled`), record the run's end as CANCELLED with
    its typed state so far (`_write`) and return True; the caller re-raises `exc`, and
    the run ends cancelled."""
    if not run_cancelled(exc):
        return False
    await _write(port, RunStatus.CANCELLED, None, None)
    return True


async def _write(
    port: TemporalExecution, status: RunStatus, result: Any, error: StructuredError | None
) -> None:
    """The end, handed to the worker's loop (`end_writer`); in a run recorded before
    that, the `keel.end` local activity, as it was then."""
    from temporalio import workflow
    from temporalio.common import RetryPolicy
    from temporalio.exceptions import ActivityError

    state = port.root.state
    request = {
        "run_id": port.run.id,
        "workflow": port.run.workflow,
        "status": status.value,
        "result": result,
        "error": None if error is None else error.model_dump(mode="json"),
        "state": None if state is None else state.snapshot(),
        # its timers, waits and values, stored with the end (no patch of its own: a
        # local activity's input is not in history; a replay checks only its type)
        "decided": carried(port),
    }
    if workflow.patched(_DIRECT):  # (asked first by write_end: no second marker)
        if not workflow.unsafe.is_replaying():
            from keel.backends.temporal.sandbox import hosted

            ends = hosted().ends
            if ends is not None:  # (a Replayer has none: it writes nothing)
                ends(request)
        return
    try:
        await workflow.execute_local_activity(
            END_ACTIVITY,
            request,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),  # a failure is logged, not raised
            summary="end",
        )
    except (ActivityError, asyncio.CancelledError):
        # the outcome is decided: a cancel that arrives now, or a store that is down,
        # does not change it (the client path records the end when it learns it)
        pass


def end_writer(app: App) -> _EndWriter:
    """What a workflow of `app`'s worker hands its end to: a callable, safe from any
    thread, that writes it on the worker's event loop (call it there); `drain()` waits
    for the writes under way.

    Example:
        ends = end_writer(app)  # in serve(), on the worker's loop
        ...
        await ends.drain()
    """
    return _EndWriter(app, asyncio.get_running_loop())


class _EndWriter:
    def __init__(self, app: App, loop: asyncio.AbstractEventLoop) -> None:
        self._app = app
        self._loop = loop
        self._tasks: set[asyncio.Task[bool]] = set()  # held: the loop keeps weak refs

    def __call__(self, request: dict[str, Any]) -> None:
        # workflow code runs in temporalio's threads: the write goes to the worker's loop
        self._loop.call_soon_threadsafe(self._start, request)

    def _start(self, request: dict[str, Any]) -> None:
        task = self._loop.create_task(_end(self._app, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def make_end_activity(app: App) -> Any:
    """The `keel.end` local activity: writes a run's end (`write_end`) to Keel's store,
    for runs recorded before the end was handed to the worker's loop (`_DIRECT`)."""
    from temporalio import activity

    @activity.defn(name=END_ACTIVITY)
    async def keel_end(request: dict[str, Any]) -> bool:
        return await _end(app, request)

    return keel_end


async def _end(app: App, request: dict[str, Any]) -> bool:
    from keel.engine.serde import to_json

    status = RunStatus(request["status"])
    error = request.get("error")
    info = RunInfo(
        id=request["run_id"],
        workflow=request["workflow"],
        status=status,
        input={},
        created_at=0.0,
        updated_at=0.0,
        error=None if error is None else StructuredError.model_validate(error),
    )
    result = None
    if status is RunStatus.SUCCEEDED:
        result = to_json(request.get("result"), what=f"the result of run {info.id!r}")
    state = request.get("state")
    state_json = None if state is None else to_json(state, what="state")
    try:
        # shielded: a worker evicting the run cancels its local activity (it runs again
        # on replay), which must not stop the follow-ups between the write and their end
        steps = step_writes(info.id, request.get("decided") or ())
        return await asyncio.shield(record_end(app, info, result, state_json, steps))
    except Exception:  # the client path records it later: never the run's failure
        _log.warning("the end of Temporal run %s could not be written", info.id, exc_info=True)
        return False


__all__ = [
    "END_ACTIVITY",
    "end_writer",
    "make_end_activity",
    "record_end",
    "run_cancelled",
    "write_cancelled",
    "write_end",
]
