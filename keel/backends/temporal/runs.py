"""The run methods of an App whose runs execute on Temporal (`App(backend=...)`).

`App.start/get_run/list_runs/signal/cancel` and `RunHandle`'s waits delegate here when
the App has a backend, so the CLI, the console and the API (which all go through those
methods) see Temporal runs as they see the engine's. Temporal is the truth for a run's
status; Keel's store holds the row and the journal (`mirror.py`). A row Temporal
executes that has not ended is refreshed from Temporal when read, and its end, once
Temporal reports it, is written back (idempotent): the worker writes it first when the
workflow returns, fails or is cancelled (ended.py), a termination only this way.
`steps` adds the steps the workflow decided, replayed from Temporal's history
(decided.py).

Example:
    app = keel.App(backend="temporal://localhost:7233/default?task_queue=keel")
    handle = await app.start("triage", {"ticket": t})   # a worker: keel worker --backend
    print(await handle.result())
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from keel.backends.temporal.mirror import OWNER, on_temporal
from keel.backends.temporal.remote import backend_of, client_for
from keel.errors import RunNotFound, RunSuspended
from keel.handle import RunHandle, poll_run
from keel.store.base import signal_refused
from keel.types import RunInfo, RunStatus, StepRecord

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowExecution

    from keel.app import App
    from keel.engine.registry import WorkflowDef
    from keel.store.records import RunFilter

# A `keel.state` query needs a worker to answer: without one it would hang until the
# RPC deadline. A run whose worker is down is shown RUNNING rather than stall a listing,
# and once one query of a listing times out the rest are not asked (`_Answers`).
_QUERY_TIMEOUT = timedelta(seconds=5)
_QUERIES_AT_ONCE = 8  # `keel runs`: state queries in flight together
_POLL_MAX = 0.5  # settle(): the longest gap between two reads of the run
_IN_CHUNK = 100  # ids per `WorkflowId IN (...)` visibility query

# Keel's statuses as Temporal visibility's ExecutionStatus values (a list filter).
_VISIBLE = {
    RunStatus.PENDING: ("Running",),
    RunStatus.RUNNING: ("Running",),
    RunStatus.WAITING: ("Running",),
    RunStatus.SUCCEEDED: ("Completed",),
    RunStatus.FAILED: ("Failed", "TimedOut", "Terminated"),
    RunStatus.CANCELLED: ("Canceled",),
}


async def start(
    app: App,
    wf: WorkflowDef,
    input: Any,
    run_id: str | None,
    tenant: str | None,
    session: str | None,
) -> RunHandle:
    """`App.start` on Temporal: the row first, then the workflow on the backend's queue."""
    from keel.backends.temporal.worker import start_run

    client = await client_for(app)
    rid = await start_run(
        app,
        client,
        backend_of(app).task_queue,
        wf.name,
        input,
        run_id=run_id,
        tenant=tenant,
        session=session,
    )
    return RunHandle(app, rid, wf.name)


async def get_run(app: App, run_id: str) -> RunInfo | None:
    """The run, its status refreshed from Temporal when Temporal executes it and the
    store has not seen it end; a run only Temporal knows is built from Temporal."""
    info = await app.store.get_run(run_id)
    if app.backend is None:
        return info
    if info is None:
        return await _unrecorded(app, run_id)
    if not on_temporal(info) or info.status.terminal:
        return info
    client = await client_for(app)
    return await _refresh(app, client, info, await _described(client, run_id))


async def list_runs(app: App, flt: RunFilter) -> list[RunInfo]:
    """`App.list_runs`: the store's rows, Temporal runs refreshed, plus the runs
    Temporal's visibility lists on the backend's task queue that the store lacks.

    Cheap for many rows: one visibility list query (the newest on the queue, with the
    filter) and one `WorkflowId IN (...)` query per hundred stale rows it missed give
    every status (a describe only for a row visibility has not caught up with yet);
    only the runs still running are queried (`keel.state`, a few at once) for what
    they wait on."""
    rows = await app.store.list_runs(flt)
    if app.backend is None:
        return rows
    if flt.status is not None:
        # a Temporal row reads RUNNING in the store until Keel learns its end: it may be
        # WAITING, or ended, on Temporal
        wider = dataclasses.replace(flt, status=RunStatus.RUNNING)
        rows += [r for r in await app.store.list_runs(wider) if on_temporal(r)]
    client = await client_for(app)
    found = {r.id: r for r in rows}
    visible = {e.id: e for e in await _visible(app, client, flt)}
    if flt.session is None:  # a session lives in the memo, which visibility cannot filter
        for rid in visible.keys() - found.keys():
            known = await app.store.get_run(rid)
            found[rid] = known if known is not None else _from_visibility(visible[rid])
    stale = [r for r in found.values() if on_temporal(r) and not r.status.terminal]
    missed = [r.id for r in stale if r.id not in visible]
    for i in range(0, len(missed), _IN_CHUNK):
        listed = _ids_query(missed[i : i + _IN_CHUNK])
        if listed:
            visible.update({e.id: e for e in await _listed(client, listed, None)})
    gate, answers = asyncio.Semaphore(_QUERIES_AT_ONCE), _Answers()

    async def fresh(info: RunInfo) -> RunInfo:
        async with gate:
            seen = visible.get(info.id)
            if seen is None:  # visibility lags a start: ask for this one run
                seen = await _described(client, info.id)
            return await _refresh(app, client, info, seen, answers)

    for new in await asyncio.gather(*(fresh(r) for r in stale)):
        found[new.id] = new
    shown = [r for r in found.values() if flt.status is None or r.status is flt.status]
    shown.sort(key=lambda r: r.created_at, reverse=True)
    return shown[: flt.limit]


async def steps(app: App, info: RunInfo) -> list[StepRecord]:
    """`App.steps` for a run on Temporal: the entries its activities wrote to Keel's
    store, plus the steps the workflow decided itself (timers, signal waits,
    `ctx.now/uuid/random`): stored with the run's end, or, until then, read from
    Temporal's history by a replay (decided.py)."""
    records = await app.store.load_steps(info.id)
    if not (on_temporal(info) or info.status.terminal):  # (an ended row has no lease)
        return records
    from keel.backends.temporal.decided import decided_steps, stored

    if stored(info, records):  # the worker wrote them with the end: no replay
        return records

    client = await client_for(app)
    queue = backend_of(app).task_queue
    decided = await decided_steps(app, client, info.id, info.workflow, queue)
    known = {r.key for r in records}
    return records + [r for r in decided if r.key not in known]


async def wait(
    app: App,
    run_id: str,
    done: Callable[[RunStatus], bool],
    timeout: float | None,
) -> RunInfo:
    """`RunHandle.result()/settle()` for a Temporal run: `result()` waits on Temporal's
    own result (then the store learns the end); `settle()` reads the run until it waits
    or ends. A timeout raises `keel.RunSuspended` when the run waits, else TimeoutError."""
    info = await _known(app, run_id)
    if not on_temporal(info):  # an engine run in this App's store
        return await poll_run(app, run_id, done, timeout)
    if done(info.status):
        return info
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    try:
        if not done(RunStatus.WAITING):  # result(): only an end will do
            return await asyncio.wait_for(_end(app, run_id), timeout)
        poll = 0.02
        while not done(info.status):
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError
            await asyncio.sleep(poll if left is None else min(poll, left))
            poll = min(poll * 2, _POLL_MAX)
            info = await _known(app, run_id)
        return info
    except TimeoutError:
        info = await _known(app, run_id)
        if done(info.status):
            return info
        if info.status is RunStatus.WAITING:
            raise RunSuspended(
                f"run {run_id} is WAITING for {', '.join(info.waiting_on) or 'a timer'}",
                run_id=run_id,
            ) from None
        raise TimeoutError(f"run {run_id} is still {info.status.value} after {timeout}s") from None


async def signal(app: App, run_id: str, name: str, payload: Any, queue: bool) -> bool | None:
    """`App.signal` for a Temporal run (None: not one, the store takes the signal).
    Temporal queues every signal, so `queue=False` is checked here first, against what
    the run waits for now (the `keel.state` query)."""
    info = await _known(app, run_id)
    if not on_temporal(info):
        return None
    waiting = info.status is RunStatus.WAITING and name in info.waiting_on
    if info.status.terminal or not (waiting or queue):
        raise signal_refused(info, name, 0)
    client = await client_for(app)
    await client.get_workflow_handle(info.id).signal(name, payload)
    return waiting


async def cancel(app: App, run_id: str, grace: float = 10.0) -> RunInfo | None:
    """`App.cancel` for a Temporal run (None: not one): Temporal's cancellation. The row
    ends CANCELLED when Temporal reports the end, waited for up to `grace` seconds (a run
    whose worker is down ends when one comes back; `keel runs` then shows it)."""
    info = await _known(app, run_id)
    if not on_temporal(info):
        return None
    if info.status.terminal:
        return info
    client = await client_for(app)
    await client.get_workflow_handle(info.id).cancel()
    try:
        return await asyncio.wait_for(_end(app, info.id), grace)
    except TimeoutError:
        return await _known(app, info.id)


class TemporalRuns:
    """`App`'s run methods for an App on Temporal (what `App.start`, `get_run`,
    `list_runs`, `signal` and `cancel` delegate to).

    Example:
        runs = TemporalRuns(app)
        info = await runs.get_run("t-1")
    """

    def __init__(self, app: App) -> None:
        self.app = app

    async def start(
        self,
        wf: WorkflowDef,
        input: Any,
        run_id: str | None,
        tenant: str | None,
        session: str | None,
    ) -> RunHandle:
        return await start(self.app, wf, input, run_id, tenant, session)

    async def get_run(self, run_id: str) -> RunInfo | None:
        return await get_run(self.app, run_id)

    async def list_runs(self, flt: RunFilter) -> list[RunInfo]:
        return await list_runs(self.app, flt)

    async def signal(self, run_id: str, name: str, payload: Any, queue: bool) -> bool | None:
        return await signal(self.app, run_id, name, payload, queue)

    async def cancel(self, run_id: str) -> RunInfo | None:
        return await cancel(self.app, run_id)

    async def steps(self, info: RunInfo) -> list[StepRecord]:
        return await steps(self.app, info)


# -- reading a run from Temporal ---------------------------------------------------------


async def _known(app: App, run_id: str) -> RunInfo:
    info = await get_run(app, run_id)
    if info is None:
        raise RunNotFound(f"no run {run_id!r} in {app.store_url}", run_id=run_id)
    return info


async def _end(app: App, run_id: str, unrecorded: RunInfo | None = None) -> RunInfo:
    """Wait for the run's end on Temporal and record it in the store; the run as stored
    after (`unrecorded`: a run the store lacks, given the end Temporal reports)."""
    from keel.backends.temporal.worker import _ended, end_of

    client = await client_for(app)
    ended = await end_of(client, run_id)
    stored = await app.store.get_run(run_id)
    if stored is not None and not stored.status.terminal:  # the worker did not write it
        await _ended(app, ended)  # Keel's store learns the end (cancelled, terminated)
        stored = await app.store.get_run(run_id)
    if stored is not None:
        return stored
    base = unrecorded if unrecorded is not None else ended
    return base.model_copy(
        update={"status": ended.status, "result": ended.result, "error": ended.error}
    )


async def _described(client: Client, run_id: str) -> Any:
    """Temporal's description of the run (None: Temporal has no such workflow)."""
    from temporalio.service import RPCError, RPCStatusCode

    try:
        return await client.get_workflow_handle(run_id).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return None
        raise


class _Answers:
    """Whether the workers still answer `keel.state` queries in this read: after one
    query timed out, a listing does not wait on the others (no worker is polling)."""

    def __init__(self) -> None:
        self.ok = True


async def _refresh(
    app: App, client: Client, info: RunInfo, seen: Any, answers: _Answers | None = None
) -> RunInfo:
    """`info` as Temporal has it now (`seen`: its description or visibility entry; None:
    unknown to Temporal, left as stored). An end is written to the store."""
    from keel.backends.temporal.worker import _status

    if seen is None:
        return info
    status = _status(seen.status)
    if status.terminal:
        return await _end(app, info.id, info)  # the end is in history: no wait
    return await _live(client, info, answers or _Answers())


async def _live(client: Client, info: RunInfo, answers: _Answers) -> RunInfo:
    """A running run with what it holds now (the `keel.state` query): WAITING with
    the signals or decisions it waits for (or its timer's wake time), its degraded steps
    and typed state; RUNNING if no worker answers the query in time."""
    from temporalio.service import RPCError, RPCStatusCode

    from keel.backends.temporal.workflow import STATE_QUERY

    running = info.model_copy(update={"status": RunStatus.RUNNING})
    if not answers.ok:
        return running
    handle = client.get_workflow_handle(info.id)
    try:
        held = await handle.query(STATE_QUERY, rpc_timeout=_QUERY_TIMEOUT)
    except RPCError as exc:  # the deadline passed (reported as CANCELLED): no worker polls
        if exc.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
            answers.ok = False
        return running
    except Exception:  # a worker without the query, or failing its task: RUNNING is all
        return running
    held = held if isinstance(held, dict) else {}
    waits = list(held.get("waiting_on") or [])
    wake = held.get("wake_at")
    return info.model_copy(
        update={
            "status": RunStatus.WAITING if waits or wake is not None else RunStatus.RUNNING,
            "waiting_on": waits,
            "wake_at": wake,
            "degraded": list(held.get("degraded") or info.degraded),
            "state": held.get("state", info.state),
        }
    )


async def _unrecorded(app: App, run_id: str) -> RunInfo | None:
    """A run Temporal has on the backend's task queue that Keel's store lacks (started
    with temporalio directly, or the store was reset): shown, never written."""
    client = await client_for(app)
    seen = await _described(client, run_id)
    if seen is None or seen.task_queue != backend_of(app).task_queue:
        return None
    return await _refresh(app, client, _from_visibility(seen), seen)


def _from_visibility(seen: WorkflowExecution) -> RunInfo:
    from keel.backends.temporal.worker import _status

    started = seen.start_time.timestamp()
    closed = seen.close_time.timestamp() if seen.close_time else None
    return RunInfo(
        id=seen.id,
        workflow=seen.workflow_type,
        status=_status(seen.status),
        input={},
        created_at=started,
        updated_at=closed or started,
        ended_at=closed,
        lease_owner=OWNER,
    )


async def _visible(app: App, client: Client, flt: RunFilter) -> list[WorkflowExecution]:
    """The newest runs on the backend's task queue matching `flt`: one list query."""
    terms = [f"TaskQueue = {_quoted(backend_of(app).task_queue)}"]
    if flt.workflow is not None:
        terms.append(f"WorkflowType = {_quoted(flt.workflow)}")
    if flt.status is not None:
        names = ", ".join(_quoted(s) for s in _VISIBLE[flt.status])
        terms.append(f"ExecutionStatus IN ({names})")
    if flt.since is not None:
        terms.append(f"StartTime >= {_quoted(_iso(flt.since))}")
    if flt.until is not None:
        terms.append(f"StartTime < {_quoted(_iso(flt.until))}")
    return await _listed(client, " AND ".join(terms), flt.limit)


async def _listed(client: Client, query: str, limit: int | None) -> list[WorkflowExecution]:
    return [e async for e in client.list_workflows(query, limit=limit)]


def _ids_query(ids: list[str]) -> str:
    """`WorkflowId IN (...)` for ids visibility's quoting can carry (others: skipped,
    shown as stored)."""
    usable = [i for i in ids if "'" not in i and "\\" not in i]
    return f"WorkflowId IN ({', '.join(_quoted(i) for i in usable)})" if usable else ""


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


__all__ = ["TemporalRuns", "cancel", "get_run", "list_runs", "signal", "start", "steps", "wait"]
