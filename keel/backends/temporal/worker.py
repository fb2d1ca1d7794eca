"""Hosting an App's workflows and tools in a Temporal worker, and starting runs there.

Example:
    backend = Backend(address="localhost:7233", task_queue="keel")
    client = await connect(backend, app=app)
    async with serve(app, client, backend):
        run_id = await start(app, client, backend, "triage", {"ticket": t}, run_id="t-1")
        print(await result(app, client, run_id))
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from keel._ids import id_problem
from keel.backends.temporal.claims import CLAIM_THRESHOLD
from keel.backends.temporal.config import Backend
from keel.backends.temporal.workflow_memo import MEMO_SESSION, MEMO_TENANT
from keel.engine.serde import from_json
from keel.errors import ConfigError, InputError, KeelError, structured
from keel.handle import input_json, new_run_id, outcome, same_input, same_session
from keel.types import RunInfo, RunStatus, StructuredError

# Temporal's execution statuses as Keel's run statuses (for messages about a run).
_STATUS = {
    "RUNNING": RunStatus.RUNNING,
    "COMPLETED": RunStatus.SUCCEEDED,
    "FAILED": RunStatus.FAILED,
    "TIMED_OUT": RunStatus.FAILED,
    "TERMINATED": RunStatus.FAILED,
    "CANCELED": RunStatus.CANCELLED,
    "CONTINUED_AS_NEW": RunStatus.RUNNING,
}

# The largest claim threshold `connect` takes: 1 MiB, half of Temporal's payload limit.
_MAX_THRESHOLD = 1024 * 1024

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.worker import Replayer

    from keel.app import App
    from keel.codec import PayloadCodec
    from keel.store.journal import JournalStore


async def connect(
    backend: Backend,
    *,
    app: App | None = None,
    codec: PayloadCodec | None = None,
    claim_threshold: int = CLAIM_THRESHOLD,
) -> Client:
    """A Temporal client for `backend`'s address and namespace (a clear error if none
    answers there). Connect for an App (`app=`), as `serve` and `start` require: every
    payload it writes to Temporal's history is encoded by the App's codec, as Keel's
    store encodes its own, and a payload over `claim_threshold` bytes is kept in the
    App's store, the history holding a reference (docs/temporal.md, "Large payloads").
    `codec=` alone encodes without the claim check (a client that only reads).

    Example:
        client = await connect(Backend.from_url("temporal://localhost:7233/default"), app=app)
    """
    from temporalio.client import Client

    if app is not None and codec is not None and codec is not app.codec:
        raise ConfigError(
            "connect(backend, app=app, codec=...): the codec differs from the App's; pass "
            "only app=app (its codec is used)"
        )
    if isinstance(claim_threshold, bool) or not isinstance(claim_threshold, int):
        raise ConfigError(f"connect(claim_threshold=...) takes bytes, got {claim_threshold!r}")
    if not 0 <= claim_threshold <= _MAX_THRESHOLD:
        raise ConfigError(
            f"connect(claim_threshold={claim_threshold}): give 0 to {_MAX_THRESHOLD} bytes; "
            "a payload over Temporal's 2 MB limit must be claimed, and a threshold near it "
            f"leaves no room for several in one workflow task (the default is {CLAIM_THRESHOLD})"
        )
    store = None if app is None else (lambda: app.store)
    converter = _converter(codec if app is None else app.codec, store, claim_threshold)
    try:
        return await Client.connect(
            backend.address, namespace=backend.namespace, data_converter=converter
        )
    except Exception as exc:
        raise ConfigError(
            f"cannot reach Temporal at {backend.address} (namespace {backend.namespace!r}): "
            f"{exc}; start one with `temporal server start-dev` or fix the address"
        ) from exc


@asynccontextmanager
async def serve(
    app: App,
    client: Client,
    backend: Backend,
    *,
    max_cached_workflows: int = 1000,
    grace: float | None = None,
) -> AsyncIterator[None]:
    """Run a Temporal worker hosting `app`'s workflows and tools on `backend.task_queue`
    while the block runs. `max_cached_workflows=0` replays every workflow task from
    its history (what the tests do, so replay is exercised on every step). `grace`:
    seconds the activities in flight get to finish when the block ends (else none).

    Example:
        async with serve(app, client, backend):
            await asyncio.Event().wait()  # a worker process: serve until stopped
    """
    from temporalio.worker import Worker

    from keel.backends.temporal.activity import make_activity
    from keel.backends.temporal.ended import end_writer, make_end_activity
    from keel.backends.temporal.features import features_for
    from keel.backends.temporal.model_calls import make_model_activity
    from keel.backends.temporal.operation import make_op_activity
    from keel.backends.temporal.people import make_people_activity
    from keel.backends.temporal.pollers import identity
    from keel.backends.temporal.workflow import hosted_workflows
    from keel.features import _register_extraction

    _encodes(app, client)
    _register_extraction(app)  # every worker hosts ctx.memory.extract's workflow
    features = features_for(app, client, backend.task_queue)
    ends = end_writer(app)
    worker = Worker(
        client,
        task_queue=backend.task_queue,
        # in Temporal's sandbox unless Backend(sandbox=False) (docs/temporal.md)
        **hosted_workflows(app, features, sandbox=backend.sandbox, ends=ends),
        activities=[
            make_activity(app),
            make_op_activity(app),
            make_model_activity(app),
            make_people_activity(app),
            make_end_activity(app),  # a run's end, as runs recorded before ends= wrote it
        ],
        max_cached_workflows=max_cached_workflows,
        graceful_shutdown_timeout=timedelta(seconds=grace or 0),
        # pid@host and the workflows hosted: what `keel workers` shows (pollers.py)
        identity=identity(app.registry.workflows),
    )
    try:
        async with worker:
            yield
    finally:
        await ends.drain()  # the ends handed over just before the worker stopped


def replayer(app: App, *, sandbox: bool = True) -> Replayer:
    """A `temporalio.worker.Replayer` for `app`'s workflows: replay a recorded history
    against the current code (a diverged one fails with Keel's NonDeterminismError text),
    in Temporal's sandbox as a worker runs them (`sandbox=False`: without).

    Example:
        history = WorkflowHistory.from_json("run-1", Path("run-1.json").read_text())
        await replayer(app).replay_workflow(history)
    """
    from temporalio.worker import Replayer

    from keel.backends.temporal.features import features_for
    from keel.backends.temporal.workflow import hosted_workflows

    converter = _converter(app.codec, lambda: app.store)
    hosting = hosted_workflows(app, features_for(app), sandbox=sandbox)
    return Replayer(data_converter=converter, **hosting)


def _converter(
    codec: PayloadCodec | None,
    store: Callable[[], JournalStore] | None = None,
    claim_threshold: int = CLAIM_THRESHOLD,
) -> Any:
    """Temporal's default data converter, with Keel's `codec` on its payloads if any and
    the claim check into `store()` if given. The claim runs on the clear payload, the
    codec on what goes into the history (keel/backends/temporal/claims.py says why)."""
    from temporalio.converter import DataConverter

    from keel.backends.temporal.claims import claim_codec
    from keel.backends.temporal.codec import temporal_codec
    from keel.backends.temporal.converter import keel_converter

    inner = None if codec is None else temporal_codec(codec)
    outer = inner if store is None else claim_codec(store, inner, claim_threshold)
    if outer is None:
        return DataConverter.default
    return keel_converter(outer)


async def start(
    app: App,
    client: Client,
    backend: Backend,
    workflow: str,
    input: dict[str, Any] | None = None,
    *,
    run_id: str | None = None,
    tenant: str | None = None,
    session: str | None = None,
) -> str:
    """Start a run of `workflow` on Temporal (its run id is the workflow id); returns it.
    `tenant` and `session` are `ctx.tenant` and `ctx.session_id`, as with `App.start`
    (kept in the workflow's memo).

    Starting the same `run_id` again is idempotent, as `App.start`: with no input or
    the same input, the run already started (running or finished) is the one you get,
    never a second execution; a different input or workflow is refused. Bad input is
    refused here (`keel.InputError`), before anything starts.

    Example:
        run_id = await start(app, client, backend, "triage", {"ticket": t}, run_id="t-1")
    """
    return await start_run(
        app,
        client,
        backend.task_queue,
        workflow,
        input,
        run_id=run_id,
        tenant=tenant,
        session=session,
    )


async def start_run(
    app: App,
    client: Client,
    task_queue: str,
    workflow: str,
    input: dict[str, Any] | None = None,
    *,
    run_id: str | None = None,
    tenant: str | None = None,
    session: str | None = None,
) -> str:
    """`start` on the task queue `task_queue` (what a workflow's own starts use)."""
    from temporalio.common import WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from keel.backends.temporal.mirror import open_run
    from keel.backends.temporal.tracing import in_run_trace

    _encodes(app, client)
    wf = app.registry.workflow(workflow)
    rid = run_id or new_run_id()
    problem = id_problem(rid, "run id")
    problem = problem or (None if session is None else id_problem(session, "session id"))
    if problem is not None:
        raise InputError(problem, run_id=rid, session=session)
    attach = input is None and run_id is not None
    if attach and await _started(app, client, rid, wf.name, None, session):
        return rid  # attach: the first start's input stands
    data = input_json(wf, input)  # bad input: refused here, nothing started
    # Keel's store first (what keel runs / show / the console read), then Temporal
    opened = await open_run(app.store, rid, wf.name, data, tenant=tenant, session=session or rid)
    try:
        with in_run_trace(client, rid):
            await client.start_workflow(
                wf.name,
                from_json(data),
                id=rid,
                task_queue=task_queue,
                # a finished run's id is never reused: starting it again is that run
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                memo={MEMO_TENANT: tenant, MEMO_SESSION: session or rid},
            )
    except WorkflowAlreadyStartedError:
        await _started(app, client, rid, wf.name, data, session)
    except BaseException as exc:
        if opened:  # Temporal never took it: the row must not say it runs
            await _never_started(app, rid, wf.name, exc)
        raise
    return rid


async def _never_started(app: App, rid: str, workflow: str, exc: BaseException) -> None:
    from keel.backends.temporal.mirror import end_with_state

    now = time.time()
    err = structured(KeelError(f"not started on Temporal: {exc}"))
    info = RunInfo(
        id=rid,
        workflow=workflow,
        status=RunStatus.FAILED,
        input={},
        created_at=now,
        updated_at=now,
        error=err,
    )
    await end_with_state(app.store, info, None)


def _encodes(app: App, client: Client) -> None:
    """An App that encodes its payloads never writes them to Temporal in clear, and large
    payloads go to Keel's store, never into the history (the client's claim check)."""
    from keel.backends.temporal.claims import has_claims

    codec = client.data_converter.payload_codec
    if app.codec is not None and (codec is None or getattr(codec, "encrypts", True) is False):
        raise ConfigError(
            "this App encodes its payloads (keel.App(codec=...) or KEEL_ENCRYPTION_KEY), but "
            "the Temporal client does not, so run inputs, tool arguments and results would "
            "sit in Temporal's history in clear; connect with "
            "keel.backends.temporal.connect(backend, app=app)"
        )
    if not has_claims(codec):
        raise ConfigError(
            "the Temporal client has no claim check, so a payload over Temporal's 2 MB "
            "limit would fail the run instead of being kept in Keel's store; connect with "
            "keel.backends.temporal.connect(backend, app=app)"
        )


async def _started(
    app: App, client: Client, rid: str, workflow: str, data: bytes | None, session: str | None
) -> bool:
    """Whether run `rid` exists; if so, refuse a start that differs from its first one."""
    from temporalio.service import RPCError, RPCStatusCode

    handle = client.get_workflow_handle(rid)
    try:
        history = await handle.fetch_history()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    first = history.events[0].workflow_execution_started_event_attributes
    recorded = first.workflow_type.name
    if recorded != workflow:
        raise ConfigError(
            f"run id {rid!r} already belongs to workflow {recorded!r}, not {workflow!r}; "
            "pick another id",
            run_id=rid,
        )
    described = await handle.describe()
    memo = await described.memo()
    now = time.time()
    values = await client.data_converter.decode(first.input.payloads)
    info = RunInfo(
        id=rid,
        workflow=recorded,
        status=_status(described.status),
        input=values[0] if values else {},
        created_at=now,
        updated_at=now,
        session=memo.get(MEMO_SESSION) or rid,
    )
    if data is not None:
        same_input(info, data, lambda v: _short(app.redactor.text(v)))
    same_session(info, session)
    return True


def _status(status: Any) -> RunStatus:
    return _STATUS.get(getattr(status, "name", ""), RunStatus.RUNNING)


def _short(text: str) -> str:
    return text if len(text) <= 300 else text[:299] + "…"


async def signal(client: Client, run_id: str, name: str, payload: Any = None) -> None:
    """Send signal `name` (with `payload`, JSON) to run `run_id`; `ctx.wait_for` takes it
    (signals sent before the run waits are queued).

    Example:
        await signal(client, "t-1", "approved", {"by": "ada"})
    """
    await client.get_workflow_handle(run_id).signal(name, payload)


async def result(app: App, client: Client, run_id: str) -> Any:
    """Wait for run `run_id` to end: its result (as the workflow's return type), or
    `keel.RunFailed` naming the error and its step (`keel.RunCancelled` when it was
    cancelled), exactly as `RunHandle.result()`.

    Example:
        summary = await result(app, client, "t-1")
    """
    # the store names the run's workflow: no describe() round trip per result
    stored = await app.store.get_run(run_id)
    info = await end_of(client, run_id, stored.workflow if stored is not None else None)
    await _ended(app, info)
    return outcome(app, info)


async def end_of(client: Client, run_id: str, workflow: str | None = None) -> RunInfo:
    """Wait for run `run_id` (of `workflow`, else asked of Temporal) to end on Temporal:
    how it ended, as a `RunInfo` (its result, or the structured error; times and input
    are not Temporal's to give)."""
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError

    handle = client.get_workflow_handle(run_id)
    if workflow is None:
        workflow = (await handle.describe()).workflow_type
    now = time.time()
    info = RunInfo(
        id=run_id,
        workflow=workflow,
        status=RunStatus.SUCCEEDED,
        input={},
        created_at=now,
        updated_at=now,
    )
    try:
        info.result = await handle.result()
    except WorkflowFailureError as exc:
        cause = exc.cause
        info.status = RunStatus.FAILED
        if isinstance(cause, ApplicationError) and cause.details:
            info.error = StructuredError.model_validate(cause.details[0])
        elif isinstance(cause, CancelledError):
            info.status = RunStatus.CANCELLED
        elif isinstance(cause, TerminatedError):
            info.error = structured(KeelError(f"terminated on Temporal: {cause.message}"))
        else:
            info.error = structured(KeelError(f"failed on Temporal: {cause or exc}"))
    return info


async def _ended(app: App, info: RunInfo) -> None:
    """Keel's store learns the end of a run Temporal executed (idempotent)."""
    from keel.backends.temporal.ended import record_end
    from keel.engine.serde import to_json

    data = None
    if info.status is RunStatus.SUCCEEDED:
        data = to_json(info.result, what=f"the result of run {info.id!r}")
    await record_end(app, info, data)


async def cancel(client: Client, run_id: str) -> None:
    """Cancel run `run_id`: the step it waits on raises `asyncio.CancelledError` in the
    workflow, and the run ends CANCELLED (`result()` raises `keel.RunCancelled`).

    Example:
        await cancel(client, "t-1")
    """
    await client.get_workflow_handle(run_id).cancel()


__all__ = ["cancel", "connect", "replayer", "result", "serve", "signal", "start", "start_run"]
