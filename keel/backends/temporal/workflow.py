"""The one generic Temporal workflow that runs every Keel workflow of a hosted App.

It is a dynamic workflow: its Temporal type is the Keel workflow's name, and its one
argument the run's input (JSON, by keyword). It runs the registered function with a
`keel.Context` over `TemporalExecution`, so the workflow code is the same on both
executors. Signals are dynamic too: any name, queued until `ctx.wait_for` takes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from keel.backends.temporal.hosting import hosted
from keel.backends.temporal.port import TemporalExecution
from keel.engine.context import Context
from keel.engine.journal import Scope
from keel.engine.serde import from_json, to_json
from keel.engine.state import StateTracker
from keel.errors import NonDeterminismError, structured
from keel.types import RunInfo, RunStatus


@workflow.defn(dynamic=True, sandboxed=False)
class KeelWorkflow:
    """Runs `app.registry.workflow(<this workflow's type>)` with a Temporal-backed Context.

    Unsandboxed, on purpose: Keel's workflows are functions found in the App's
    registry, imported once by the worker like any module, while the sandbox isolates
    by re-importing a workflow's module per run; passing everything through (keel, the
    user's modules, pydantic) would leave it nothing to isolate. What keeps a workflow
    deterministic is Keel's rule that every effect goes through `ctx`, checked on
    replay by Keel's step keys and digests and Temporal's command checks.
    """

    def __init__(self) -> None:
        self._signals: dict[str, list[Any]] = {}

    @workflow.signal(dynamic=True)
    def _signal(self, name: str, args: Sequence[RawValue]) -> None:
        convert = workflow.payload_converter()
        payload = convert.from_payload(args[0].payload) if args else None
        self._signals.setdefault(name, []).append(payload)

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> Any:
        info = workflow.info()
        app = hosted(info.task_queue)
        wf = app.registry.workflow(info.workflow_type)
        raw = workflow.payload_converter().from_payload(args[0].payload) if args else {}
        start = info.start_time.timestamp()
        run = RunInfo(
            id=info.workflow_id,
            workflow=wf.name,
            status=RunStatus.RUNNING,
            input=raw or {},
            created_at=start,
            updated_at=start,
        )
        state = StateTracker(wf.state) if wf.state is not None else None
        port = TemporalExecution(run, app.registry.tools, self._signals, Scope("", state))
        try:
            kwargs = wf.kwargs(run.input)
            result = await wf.fn(Context(port, port.root), **kwargs)
            if port.fatal is not None:  # the workflow caught a hard stop: it still fails
                raise port.fatal
            return from_json(to_json(result, what=f"workflow {wf.name!r}"))
        except NonDeterminismError as exc:
            # Temporal's kind: the task fails as non-deterministic (Replayer reports it;
            # a worker fails the run, as Keel's engine does: see worker.py)
            raise workflow.NondeterminismError(exc.message) from exc
        except Exception as exc:
            failure = port.fatal or exc
            if isinstance(failure, NonDeterminismError):
                raise workflow.NondeterminismError(failure.message) from exc
            err = structured(failure)
            # the run fails, carrying Keel's structured error (a plain exception would
            # only fail the workflow task, retried forever)
            raise ApplicationError(
                err.message, err.model_dump(mode="json"), type=err.type, non_retryable=True
            ) from exc


__all__ = ["KeelWorkflow"]
