"""The one generic Temporal workflow that runs every Keel workflow of a hosted App.

`workflow_class(app)` builds it for one App (its registry is closed over, so two Apps
in one process, or a Replayer, need no lookup by task queue).

It is a dynamic workflow: its Temporal type is the Keel workflow's name, and its one
argument the run's input (JSON, by keyword). It runs the registered function with a
`keel.Context` over `TemporalExecution`, so the workflow code is the same on both
executors. Signals are dynamic too: any name, queued until `ctx.wait_for` takes it.
People's decisions arrive as the update `keel.decide` (keel.backends.temporal.decisions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from keel.backends.temporal.activity import check_size
from keel.backends.temporal.decided import tap
from keel.backends.temporal.decisions import DECIDE_UPDATE, Decisions
from keel.backends.temporal.ended import write_end
from keel.backends.temporal.port import TemporalExecution
from keel.backends.temporal.workflow_memo import MEMO_SESSION, MEMO_TENANT
from keel.engine.context import Context
from keel.engine.journal import Scope
from keel.engine.serde import from_json, to_json
from keel.engine.state import StateTracker
from keel.errors import NonDeterminismError, structured
from keel.types import RunInfo, RunStatus

if TYPE_CHECKING:
    from keel.app import App
    from keel.engine.plugins import Features

STATE_QUERY = "keel.state"  # a Temporal query: the run's state, degraded steps, waits


def workflow_class(app: App, features: Features | None = None) -> type:
    """The dynamic Temporal workflow class that runs `app`'s Keel workflows.

    It runs `app.registry.workflow(<its workflow type>)` with a Temporal Context. Built
    per App, so two Apps in one process, or a Replayer, need no lookup by task queue.

    Unsandboxed, on purpose: Keel's workflows are functions found in the App's
    registry, imported once by the worker like any module, while the sandbox isolates
    by re-importing a workflow's module per run; passing everything through (keel, the
    user's modules, pydantic) would leave it nothing to isolate. What keeps a workflow
    deterministic is Keel's rule that every effect goes through `ctx`, checked on
    replay by Keel's step keys and digests and Temporal's command checks.
    """
    if features is None:
        from keel.backends.temporal.features import features_for

        features = features_for(app)

    # `self` unannotated: temporalio reads handler signatures and counts an annotated one
    def __init__(self) -> None:  # type: ignore[no-untyped-def]
        self.signals = {}
        self.live = {}  # "port": this execution's TemporalExecution, once it runs
        self.decisions = Decisions()  # requests for people it waits on, decisions taken

    def on_signal(self, name: str, args: Sequence[RawValue]) -> None:  # type: ignore[no-untyped-def]
        convert = workflow.payload_converter()
        payload = convert.from_payload(args[0].payload) if args else None
        self.signals.setdefault(name, []).append(payload)

    async def run(self, args: Sequence[RawValue]) -> Any:  # type: ignore[no-untyped-def]
        return await _run(app, features, self.signals, args, self.live)

    def state(self) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        port = self.live.get("port")
        return {} if port is None else port.snapshot()

    def decide(self, request: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        taken: dict[str, Any] = self.decisions.take(request)
        return taken

    def check_decision(self, request: Any) -> None:  # type: ignore[no-untyped-def]
        self.decisions.validate(request)  # refused: the caller gets why, history nothing

    # temporalio refuses handlers of classes defined in a function, because its sandbox
    # re-imports a workflow's module by name; this class is never sandboxed (see above)
    on_signal.__qualname__ = "KeelWorkflow.on_signal"
    run.__qualname__ = "KeelWorkflow.run"
    state.__qualname__ = "KeelWorkflow.state"
    decide.__qualname__ = "KeelWorkflow.decide"
    check_decision.__qualname__ = "KeelWorkflow.check_decision"
    on_decision = workflow.update(name=DECIDE_UPDATE)(decide)
    on_decision.validator(check_decision)
    namespace = {
        "__init__": __init__,
        "__module__": __name__,
        "__qualname__": "KeelWorkflow",
        "__doc__": f"The Keel workflows of an App ({len(app.registry.workflows)} registered).",
        "on_signal": workflow.signal(dynamic=True)(on_signal),
        "run": workflow.run(run),
        # what the run holds now (typed state, degraded steps, signals awaited)
        "state": workflow.query(name=STATE_QUERY)(state),
        # a person's decision on a request the run waits on (keel.backends.temporal.decisions)
        "decide": on_decision,
        "check_decision": check_decision,
    }
    return workflow.defn(dynamic=True, sandboxed=False)(type("KeelWorkflow", (), namespace))


async def _run(
    app: App,
    features: Features,
    signals: dict[str, list[Any]],
    args: Sequence[RawValue],
    live: dict[str, Any],
) -> Any:
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
        result = await wf.fn(Context(port, port.root), **kwargs)
        if port.hard_stop is not None:  # the workflow caught a hard stop: it still fails
            raise port.hard_stop
        data = to_json(result, what=f"workflow {wf.name!r}")
        check_size(data, f"the result of workflow {wf.name!r}")
        value = from_json(data)
    except Exception as exc:
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


__all__ = ["STATE_QUERY", "workflow_class"]
