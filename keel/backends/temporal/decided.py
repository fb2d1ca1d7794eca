"""The steps a Temporal run decides itself, read back from its history on demand.

Timers (`ctx.sleep`), signal waits (`ctx.wait_for`) and `ctx.now/uuid/random` run in
workflow code: Temporal's history holds what they were (a timer's events, a signal's
payload, the randomness seed and each task's time), but no activity ran, so nothing
wrote them to Keel's store. Rather than have every worker write them (CPU on every
run), the reader replays the history with the App's workflow code and records what
those steps returned, under the keys Keel's engine gives them (`sleep#0`,
`signal:approved#0`, `now#0`), as the engine journals them: a replay reproduces them
exactly, values and times included, since that is what Temporal's determinism means.

The replay runs in its own namespace; `tap` (called once per workflow execution) turns
recording on only for the ports of that namespace, so live workers record nothing.

Example:
    records = await decided_steps(app, client, "t-1")   # [sleep#0, signal:go#0, now#0]
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from keel.engine.serde import digest
from keel.errors import SignalTimeout, structured
from keel.types import StepKind, StepRecord, StepStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from temporalio.client import Client

    from keel.app import App
    from keel.backends.temporal.port import TemporalExecution
    from keel.engine.journal import Scope

_PREFIX = "keel.steps."  # the namespace of a steps replay: keel.steps.<random>
_TAPS: dict[str, list[StepRecord]] = {}  # replay namespace -> the steps it recorded
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
    taken: list[StepRecord] = []
    with _guard:
        _TAPS[namespace] = taken
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
    return taken


def tap(port: TemporalExecution) -> None:
    """Record `port`'s workflow-decided steps when it runs in a steps replay (workflow
    code: a dict lookup on live workers, which record nothing)."""
    from temporalio import workflow

    namespace = workflow.info().namespace
    if not namespace.startswith(_PREFIX):
        return
    with _guard:
        taken = _TAPS.get(namespace)
    if taken is not None:
        _Tap(port, taken).attach()


class _Tap:
    """Wraps one port's `value`, `sleep` and `wait_signal` to record each step."""

    def __init__(self, port: TemporalExecution, taken: list[StepRecord]) -> None:
        self.port, self.taken = port, taken
        self.value, self.sleep, self.wait = port.value, port.sleep, port.wait_signal

    def attach(self) -> None:
        port: Any = self.port  # instance attributes shadow the methods Context calls
        port.value, port.sleep, port.wait_signal = self.on_value, self.on_sleep, self.on_wait

    def _entry(
        self, scope: Scope, key_name: str, kind: StepKind, dig: str, **kw: Any
    ) -> StepRecord:
        from temporalio import workflow

        # the key and position scope.next(key_name) is about to hand out
        n = scope.counts.get(key_name, 0)
        now = workflow.now().timestamp()
        rec = StepRecord(
            run_id=self.port.run.id,
            key=f"{scope.path}{key_name}#{n}",
            scope=scope.path,
            position=scope.position,
            kind=kind,
            digest=dig,
            started_at=now,
            **kw,
        )
        if rec.status is StepStatus.PENDING:  # a wait: listed from its start
            self.taken.append(rec)
        return rec

    def on_value(self, scope: Scope, name: str, make: Callable[[], Any]) -> Any:
        rec = self._entry(scope, name, StepKind.VALUE, "", name=name, status=StepStatus.OK)
        rec.output = self.value(scope, name, make)  # (a value Temporal cannot make raises)
        rec.ended_at = rec.started_at
        self.taken.append(rec)
        return rec.output

    async def on_sleep(self, scope: Scope, seconds: float) -> None:
        dig = digest(float(seconds))
        rec = self._entry(
            scope, "sleep", StepKind.SLEEP, dig, name="sleep", status=StepStatus.PENDING
        )
        rec.wake_at = rec.started_at + max(0.0, float(seconds))
        await self.sleep(scope, seconds)
        self._ended(rec, StepStatus.OK)

    async def on_wait(self, scope: Scope, signal: str, timeout: float | None) -> Any:
        name, dig = f"signal:{signal}", digest(signal, timeout)
        rec = self._entry(scope, name, StepKind.SIGNAL, dig, name=signal, status=StepStatus.PENDING)
        if timeout is not None:
            rec.wake_at = rec.started_at + timeout
        try:
            rec.output = await self.wait(scope, signal, timeout)
        except SignalTimeout as exc:
            rec.error = structured(exc, step=rec.key)
            self._ended(rec, StepStatus.ERROR)
            raise
        self._ended(rec, StepStatus.OK)
        return rec.output

    @staticmethod
    def _ended(rec: StepRecord, status: StepStatus) -> None:
        from temporalio import workflow

        rec.status, rec.ended_at = status, workflow.now().timestamp()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _guard:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="keel-steps")
        return _pool


__all__ = ["decided_steps", "tap"]
