"""The one generic Temporal workflow that runs every Keel workflow of a hosted App.

`KeelWorkflow` is one module-level class (Temporal's sandbox imports it by name); each
worker hands it its own App through an interceptor (`hosted_workflows`), so two Apps in
one process, or a Replayer, need no lookup by task queue.

It is a dynamic workflow: its Temporal type is the Keel workflow's name, and its one
argument the run's input (JSON, by keyword). It runs the registered function with a
`keel.Context` over `TemporalExecution`, so the workflow code is the same on both
executors. Signals are dynamic too: any name, queued until `ctx.wait_for` takes it.
People's decisions arrive as the update `keel.decide` (keel.backends.temporal.decisions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from keel.backends.temporal.activity import check_size
from keel.backends.temporal.decided import tap
from keel.backends.temporal.decisions import DECIDE_UPDATE, Decisions
from keel.backends.temporal.ended import write_cancelled, write_end
from keel.backends.temporal.port import TemporalExecution
from keel.backends.temporal.sandbox import Hosted, hosted, hosting, sandboxed
from keel.backends.temporal.workflow_memo import MEMO_SESSION, MEMO_TENANT
from keel.engine.context import Context
from keel.engine.journal import Scope
from keel.engine.serde import from_json, to_json
from keel.engine.state import StateTracker
from keel.errors import NonDeterminismError, structured
from keel.types import RunInfo, RunStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from keel.app import App
    from keel.engine.plugins import Features

STATE_QUERY = "keel.state"  # a Temporal query: the run's state, degraded steps, waits


def hosted_workflows(
    app: App,
    features: Features,
    *,
    sandbox: bool = True,
    ends: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The Worker (or Replayer) options that host `app`'s workflows: `KeelWorkflow`, its
    runner (Temporal's sandbox unless `sandbox` is False) and the interceptor that hands
    it the App (keel.backends.temporal.sandbox); a worker's `ends` writes runs' ends
    (keel.backends.temporal.ended.end_writer).

    Example:
        Worker(client, task_queue="q", activities=[...], **hosted_workflows(app, features))
    """
    return {"workflows": [KeelWorkflow], **hosting(app, features, sandbox=sandbox, ends=ends)}


@workflow.defn(dynamic=True)
class KeelWorkflow:
    """The Keel workflows of the App its worker hosts (found through `hosted()`).

    Module-level, as Temporal's sandbox requires (it imports a workflow class by module
    and name); one class serves every App in the process, each worker handing it its own.
    """

    def __init__(self) -> None:
        self.signals: dict[str, list[Any]] = {}
        self.live: dict[str, Any] = {}  # "port": this execution's TemporalExecution
        self.decisions = Decisions()  # requests for people it waits on, decisions taken

    @workflow.signal(dynamic=True)
    def on_signal(self, name: str, args: Sequence[RawValue]) -> None:
        convert = workflow.payload_converter()
        payload = convert.from_payload(args[0].payload) if args else None
        self.signals.setdefault(name, []).append(payload)

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> Any:
        here = hosted()
        return await _run(here, self.signals, args, self.live)

    # what the run holds now (typed state, degraded steps, signals awaited)
    @workflow.query(name=STATE_QUERY)
    def state(self) -> dict[str, Any]:
        port = self.live.get("port")
        return {} if port is None else port.snapshot()

    # a person's decision on a request the run waits on (keel.backends.temporal.decisions)
    @workflow.update(name=DECIDE_UPDATE)
    def decide(self, request: Any) -> dict[str, Any]:
        taken: dict[str, Any] = self.decisions.take(request)
        return taken

    @decide.validator
    def check_decision(self, request: Any) -> None:
        self.decisions.validate(request)  # refused: the caller gets why, history nothing


async def _run(
    here: Hosted,
    signals: dict[str, list[Any]],
    args: Sequence[RawValue],
    live: dict[str, Any],
) -> Any:
    app, features = here.app, here.features
    info = workflow.info()
    wf = app.registry.workflow(info.workflow_type)
    raw = workflow.payload_converter().from_payload(args[0].payload) if args else {}
    start = info.start_time.timestamp()
    memo = workflow.memo()
    run = RunInfo(
        id=info.workflow_id,
        workflow=wf.name,
        status=RunStatus.RUNNING,
        input=raw or {},
        created_at=start,
        updated_at=start,
        tenant=memo.get(MEMO_TENANT),
        session=memo.get(MEMO_SESSION) or info.workflow_id,
    )
    state = StateTracker(wf.state) if wf.state is not None else None
    port = TemporalExecution(run, app.registry.tools, signals, Scope("", state), features)
    live["port"] = port
    tap(port)  # a replay that reads the steps the workflow decides (decided.py) records them
    try:
        kwargs = wf.kwargs(run.input)
        result = await sandboxed(wf, here)(Context(port, port.root), **kwargs)
        if port.hard_stop is not None:  # the workflow caught a hard stop: it still fails
            raise port.hard_stop
        data = to_json(result, what=f"workflow {wf.name!r}")
        check_size(data, f"the result of workflow {wf.name!r}")
        value = from_json(data)
    except (Exception, asyncio.CancelledError) as exc:
        if await write_cancelled(port, exc) or not isinstance(exc, Exception):
            # the run cancelled (its end written first, ended.py), or an eviction's cancel
            raise
        failure = port.hard_stop or exc
        if isinstance(failure, NonDeterminismError):
            # The workflow TASK fails, with Keel's text naming both steps (a Replayer
            # reports it; the UI shows it on the task). It is detected while replaying
            # history, where a FailWorkflow command would itself mismatch the history
            # still to come, so the run is not failed: it retries its task until the
            # code is fixed, or is reset or terminated (docs/temporal.md).
            raise failure from None
        err = structured(failure)
        await write_end(port, None, err)  # the store learns the end from the worker
        # the run fails, carrying Keel's structured error (a plain exception would
        # only fail the workflow task, retried forever)
        raise ApplicationError(
            err.message, err.model_dump(mode="json"), type=err.type, non_retryable=True
        ) from exc
    await write_end(port, value)  # the store learns the end (and state) from the worker
    return value


__all__ = ["STATE_QUERY", "KeelWorkflow", "hosted_workflows"]
