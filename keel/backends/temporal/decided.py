"""The steps a Temporal run decides itself: recorded by the port, stored with the end.

Timers (`ctx.sleep`), signal waits (`ctx.wait_for`) and `ctx.now/uuid/random` run in
workflow code: no activity runs, so no activity writes them. The port appends each to a
list as it decides it (`TemporalExecution.decided`, nothing more per step); the run's
end carries the list (`carried`), written as journal entries (`step_writes`) in the
transaction that ends the run (ended.py), under the keys Keel's engine gives them
(`sleep#0`, `signal:approved#0`, `now#0`).

A run not ended yet (or one whose end the client recorded: terminated) has them only
in Temporal's history: the reader replays it with the App's code in a namespace of its
own, where `tap` hands it the port, and converts the port's list the same way
(`records`). A replay reproduces the values and times exactly: that is what
Temporal's determinism means.

Example:
    records = await decided_steps(app, client, "t-1", "paced", "q")  # [sleep#0, now#0]
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from keel.engine.serde import digest
from keel.errors import structured
from keel.types import RunInfo, StepKind, StepRecord, StepStatus, StructuredError

if TYPE_CHECKING:
    from temporalio.client import Client

    from keel.app import App
    from keel.backends.temporal.port import TemporalExecution
    from keel.store import StepWrite

_PREFIX = "keel.steps."  # the namespace of a steps replay: keel.steps.<random>
_TAPS: dict[str, list[TemporalExecution]] = {}  # replay namespace -> its workflow's ports
_VALUES = ("now", "uuid", "random")
_guard = threading.Lock()  # workflow code runs in the replayer's threads
_pool: ThreadPoolExecutor | None = None  # shared: a Replayer never shuts its own down
_log = logging.getLogger("keel.temporal")


async def decided_steps(
    app: App, client: Client, run_id: str, workflow: str, task_queue: str
) -> list[StepRecord]:
    """The workflow-decided steps of run `run_id` (timers, signal waits, values), from
    a replay of its history; [] when Temporal has no such run of `workflow` on
    `task_queue` (an engine run, or one gone with Temporal's retention). A history the
    code no longer replays (it changed) gives the steps before the divergence."""
    from temporalio.service import RPCError, RPCStatusCode
    from temporalio.worker import Replayer

    from keel.backends.temporal.features import features_for
    from keel.backends.temporal.worker import _converter
    from keel.backends.temporal.workflow import hosted_workflows

    if workflow not in app.registry.workflows:  # no code to replay (keel show without --app)
        return []
    try:
        history = await client.get_workflow_handle(run_id).fetch_history()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:  # gone from Temporal (its retention)
            return []
        raise
    started = history.events[0].workflow_execution_started_event_attributes
    if (started.workflow_type.name, started.task_queue.name) != (workflow, task_queue):
        return []
    namespace = f"{_PREFIX}{uuid.uuid4().hex}"
    ports: list[TemporalExecution] = []
    with _guard:
        _TAPS[namespace] = ports
    try:
        # Unsandboxed: the history is what the run did, and the reader's CPU matters.
        replay = Replayer(
            **hosted_workflows(app, features_for(app), sandbox=False),
            data_converter=_converter(app.codec, lambda: app.store),
            namespace=namespace,
            workflow_task_executor=_executor(),
        )
        done = await replay.replay_workflow(history, raise_on_replay_failure=False)
        if done.replay_failure is not None:  # what replayed before the divergence stands
            _log.warning("run %s did not replay to its end: %s", run_id, done.replay_failure)
    finally:
        with _guard:
            _TAPS.pop(namespace, None)
    return records(run_id, ports[-1].decided) if ports else []


def tap(port: TemporalExecution) -> None:
    """Hand `port` to the reader when it runs in a steps replay (workflow code: a string
    check on live workers, which hand nothing)."""
    from temporalio import workflow

    namespace = workflow.info().namespace
    if not namespace.startswith(_PREFIX):
        return
    with _guard:
        ports = _TAPS.get(namespace)
        if ports is not None:
            ports.append(port)


def carried(port: TemporalExecution) -> list[list[Any]]:
    """What `port` decided, as JSON for the run's end (workflow code, once per run: only
    a timed-out wait's error needs converting)."""
    return [
        s if not isinstance(s[9], BaseException) else [*s[:9], _error(s).model_dump(mode="json")]
        for s in port.decided
    ]


def records(run_id: str, decided: Sequence[Sequence[Any]]) -> list[StepRecord]:
    """The journal entries of the steps a run decided (`TemporalExecution.decided`, or
    what `carried` made of it), as Keel's engine journals them: a wait not over yet is
    PENDING, listed from its start; `sleep#0` has its wake time, `signal:go#0` the
    payload taken or the `SignalTimeout`, `now#0` the value the run used."""
    out = []
    for step in decided:
        kind, scope, key, pos, name, arg, started, ended, output, error = step
        kind = StepKind(kind)
        rec = StepRecord(
            run_id=run_id,
            key=key,
            scope=scope,
            position=pos,
            kind=kind,
            name=name,
            digest="",
            status=StepStatus.PENDING if ended is None else StepStatus.OK,
            output=output,
            started_at=started,
            ended_at=ended,
        )
        if kind is StepKind.SLEEP:
            rec.digest = digest(float(arg))
            rec.wake_at = started + max(0.0, float(arg))
        elif kind is StepKind.SIGNAL:
            rec.digest = digest(name, arg)
            rec.wake_at = None if arg is None else started + arg
        if error is not None:
            rec.status, rec.error = StepStatus.ERROR, _error(step)
        out.append(rec)
    return out


def step_writes(run_id: str, decided: Sequence[Sequence[Any]]) -> list[StepWrite]:
    """`records` as the store writes them with the run's end, a large output out of line
    as every Temporal entry's (mirror.py)."""
    from keel.backends.temporal.mirror import step_write
    from keel.engine.serde import to_json

    return [
        step_write(r, None if r.output is None else to_json(r.output, what=r.key))
        for r in records(run_id, decided)
    ]


def stored(info: RunInfo, steps: Sequence[StepRecord]) -> bool:
    """Whether `steps` (Keel's store's entries of run `info`) hold the steps the run
    decided: the worker writes them with the end, all or none, so an ended run with one
    of them needs no replay. (A run that decided none, or whose end the client recorded
    — terminated, or ended before they were stored — is replayed.)"""
    return info.status.terminal and any(_decided(r) for r in steps)


def _decided(rec: StepRecord) -> bool:
    # (activities write VALUE and SIGNAL entries too: an operation's, an escalation's)
    if rec.kind is StepKind.SLEEP:
        return True
    if rec.kind is StepKind.SIGNAL:
        return rec.key.rsplit("/", 1)[-1].startswith("signal:")
    return rec.kind is StepKind.VALUE and rec.name in _VALUES


def _error(step: Sequence[Any]) -> StructuredError:
    error = step[9]
    if isinstance(error, BaseException):
        return structured(error, step=step[2])
    return StructuredError.model_validate(error)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _guard:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="keel-steps")
        return _pool


__all__ = ["carried", "decided_steps", "records", "step_writes", "stored", "tap"]
