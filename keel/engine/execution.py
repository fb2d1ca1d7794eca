"""Executing one run: the journaled-step primitive, replay, suspension and the run's end."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.engine.hooks import StepEvent
from keel.engine.journal import Journal, Scope
from keel.engine.registry import WorkflowDef
from keel.engine.runtime import Runtime
from keel.engine.serde import from_json, revive, to_json
from keel.engine.state import StateTracker, compose
from keel.errors import (
    KeelError,
    LeaseLost,
    NonDeterminismError,
    StoreError,
    from_structured,
    structured,
)
from keel.secret import use_sources
from keel.store import Claimed, StepWrite, UnitOfWork, Usage
from keel.types import RunInfo, RunStatus, StepKind, StepRecord, StepStatus, StructuredError

if TYPE_CHECKING:
    from keel.engine.recovery import StepPolicy


class Suspend(BaseException):
    """Unwinds a run that must wait (timer or signal); BaseException so user code can't eat it."""

    def __init__(self, wake_at: float | None = None, signals: frozenset[str] = frozenset()):
        super().__init__("run suspended")
        self.wake_at = wake_at
        self.signals = signals

    def merge(self, other: Suspend) -> Suspend:
        wakes = [w for w in (self.wake_at, other.wake_at) if w is not None]
        return Suspend(min(wakes) if wakes else None, self.signals | other.signals)


class Abandon(BaseException):
    """This worker must stop executing the run without writing (lease lost, fatal error)."""


class Drain(Abandon):
    """The worker is draining (`Worker.drain`): stop before a new step, hand the run back.

    An `Abandon`, so everything that lets an abandon through (map lanes finish the
    item in hand first) lets a drain through too.
    """


@dataclass(frozen=True, slots=True)
class StepInfo:
    """The step currently executing, for tools that need an idempotency key.

    Example:
        info = keel.current_step()
        stripe.charge(..., idempotency_key=info.idempotency_key)
    """

    run_id: str
    key: str
    attempt: int
    feedback: tuple[str, ...] = ()  # why the previous attempt's output failed validation

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.key}"


CURRENT_STEP: ContextVar[StepInfo | None] = ContextVar("keel_current_step", default=None)
CURRENT_SCOPE: ContextVar[tuple[RunExecution, Scope] | None] = ContextVar(
    "keel_current_scope", default=None
)


_NO_INPUT: Any = object()


def recorded_input(rec: StepRecord) -> Any:
    """What a recorded step was called with, as far as the journal knows it."""
    if rec.input is not None:
        return rec.input
    if rec.kind is StepKind.LLM and isinstance(rec.output, dict):
        return rec.output.get("request")
    return f"(inputs not recorded; digest {rec.digest})"


def current_step() -> StepInfo | None:
    """The journaled step running in this task, or None outside a step."""
    return CURRENT_STEP.get()


def _blob_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RunExecution:
    """One attempt at executing a run in this worker, from the top of the workflow."""

    def __init__(self, rt: Runtime, claimed: Claimed, owner: str, wf: WorkflowDef) -> None:
        self.rt = rt
        self.run: RunInfo = claimed.run
        self.resumed = claimed.resumed
        self.owner = owner
        self.wf = wf
        self.journal = Journal(self.run.id, [])
        self.buffer: list[StepWrite] = []  # deterministic values, flushed with the next write
        self.fatal: KeelError | None = None
        self.lost = False
        # The store failed under this execution: it stops without writing, and the run
        # (not at fault) resumes from its journal once the store works again.
        self.fault: StoreError | None = None
        self.retries_used: dict[str, int] = {}  # per tool, for retry budgets
        self.meters: dict[str, Usage] = {}  # step key -> usage to store with it
        self.inputs: dict[str, Any] = {}  # step key -> arguments, for observers only
        self.error: StructuredError | None = None  # why the run failed, once it has
        self.draining = False  # set by Worker.drain: no new step may start
        state = StateTracker(wf.state) if wf.state is not None else None
        self.root = Scope(path="", state=state)

    @property
    def run_id(self) -> str:
        return self.run.id

    # -- writing ----------------------------------------------------------------

    def _drain(self) -> list[StepWrite]:
        out, self.buffer = self.buffer, []
        return out

    def _write_for(self, rec: StepRecord, data: bytes | None) -> StepWrite:
        if data is not None and len(data) > self.rt.settings.large_output_bytes:
            rec.blob = _blob_digest(data)
            return StepWrite(rec, None, data)
        return StepWrite(rec, data)

    async def commit(self, scope: Scope, rec: StepRecord, data: bytes | None) -> None:
        """Persist a finished step (and pending deterministic values) atomically."""
        if scope.state is not None and rec.status is not StepStatus.PENDING:
            delta = scope.state.delta()
            if delta is not None and rec.state_delta:  # keep one the caller took (wait_for)
                rec.state_delta = compose(rec.state_delta, delta, scope.state.snapshot())
            elif delta is not None:
                rec.state_delta = delta
        writes = self._drain()
        write = self._write_for(rec, data)
        if rec.status is not StepStatus.PENDING:
            write.usage = self.meters.pop(rec.key, None)
        writes.append(write)
        if data is not None and rec.blob is None and rec.output is None and len(data) <= 4096:
            rec.output = from_json(data)  # the in-memory journal mirrors the stored one
        try:
            await self.rt.store.commit(UnitOfWork(self.run.id, self.owner, writes))
        except LeaseLost:
            self.lost = True
            raise Abandon() from None
        except StoreError as exc:
            self.fault = exc
            raise Abandon() from None
        self.journal.add(rec)
        self.recorded(rec, data)

    def recorded(self, rec: StepRecord, data: bytes | None = None) -> None:
        """Tell observers a journal entry is durable (tracing builds spans from these)."""
        hooks = self.rt.hooks
        if hooks.wants("step_recorded"):
            if (
                rec.output is None
                and data is not None
                and (rec.blob is None or rec.kind is StepKind.LLM)
            ):
                # the in-memory journal keeps only small outputs; observers see every one
                rec = rec.model_copy(update={"output": from_json(data)})
            hooks.step_recorded(
                StepEvent(
                    self.run.id,
                    self.run.workflow,
                    rec.key,
                    rec.kind.value,
                    rec.name,
                    rec,
                    self.inputs.pop(rec.key, None)
                    if rec.status is not StepStatus.PENDING
                    else None,
                )
            )

    def record(
        self,
        scope: Scope,
        key: str,
        pos: int,
        kind: StepKind,
        name: str,
        digest: str,
        started: float,
        *,
        status: StepStatus = StepStatus.OK,
        error: StructuredError | None = None,
        attempts: int = 1,
        wake_at: float | None = None,
    ) -> StepRecord:
        return StepRecord(
            run_id=self.run.id,
            key=key,
            scope=scope.path,
            position=pos,
            kind=kind,
            name=name,
            digest=digest,
            status=status,
            error=error,
            attempts=attempts,
            started_at=started,
            ended_at=None if status is StepStatus.PENDING else time.time(),
            wake_at=wake_at,
        )

    # -- replay -----------------------------------------------------------------

    def check(
        self, scope: Scope, key: str, pos: int, digest: str, new_input: Any = _NO_INPUT
    ) -> StepRecord | None:
        """The recorded step at `key`, or None; raise NonDeterminismError if replay diverged.

        `new_input` (what the step is called with now) is shown beside the recorded
        input when only the arguments changed, redacted and shortened.
        """
        try:
            return self.journal.check(scope.path, pos, key, digest)
        except NonDeterminismError as exc:
            if new_input is not _NO_INPUT and "recorded_digest" in exc.data:
                exc = self._changed_arguments(exc, self.journal.by_key[key], new_input)
            self.fatal = exc
            raise exc from None

    def _changed_arguments(
        self, exc: NonDeterminismError, rec: StepRecord, new_input: Any
    ) -> NonDeterminismError:
        render = self.rt.render
        before = render(recorded_input(rec))
        after = render(new_input)
        return NonDeterminismError(
            f"{exc.message}\n  recorded: {before}\n  now:      {after}",
            **{**exc.data, "recorded_input": before, "new_input": after},
        )

    def _unreached(self) -> NonDeterminismError | None:
        """The divergence of a run that ends while steps recorded earlier were never
        replayed (their effects happened, and the code that made them is gone)."""
        missed = self.journal.unreached()
        if not missed:
            return None
        first = missed[0]
        more = f" (and {len(missed) - 1} more)" if len(missed) > 1 else ""
        return NonDeterminismError(
            f"run {self.run.id}: the journal records step {first.key!r}{more}, but replay "
            "ended without reaching it; it ran in an earlier execution, so its effects "
            "happened. The workflow code changed (a step was removed, or a map or gather "
            "got fewer items); finish old runs on the old code, or version the workflow "
            "under a new name.",
            run_id=self.run.id,
            recorded=first.key,
            new=None,
            step=first.key,
            unreached=[r.key for r in missed[:20]],
        )

    async def replayed(self, scope: Scope, rec: StepRecord, annotation: Any) -> Any:
        """The recorded outcome of a completed step: its value, or its error re-raised."""
        self.journal.cover(rec.key)
        if scope.state is not None:  # apply() also syncs: later patches need this base
            scope.state.apply(rec.state_delta or {})
        if self.rt.hooks.wants("step_replayed"):
            self.rt.hooks.step_replayed(self.event(rec.key, rec.kind, rec.name, rec))
        if rec.status is StepStatus.ERROR:
            assert rec.error is not None
            raise from_structured(rec.error)
        value = rec.output
        if rec.blob:
            value = from_json(await self.rt.store.load_blob(rec.blob))
        return revive(value, annotation)

    def event(
        self, key: str, kind: StepKind, name: str, rec: StepRecord | None = None
    ) -> StepEvent:
        return StepEvent(self.run.id, self.run.workflow, key, kind.value, name, rec)

    # -- the generic durable step -------------------------------------------------

    async def step(
        self,
        scope: Scope,
        kind: StepKind,
        name: str,
        digest: str,
        fn: Callable[[], Awaitable[Any]],
        annotation: Any,
        *,
        key_name: str | None = None,
        key: str | None = None,
        pos: int | None = None,
        policy: StepPolicy | None = None,
        shown_input: Any = _NO_INPUT,
    ) -> Any:
        """Run `fn` as a journaled step under `policy`; on replay return what it recorded.

        `shown_input` is what a NonDeterminismError shows as the new input (default:
        the policy's input).
        """
        if self.fatal is not None:  # a hard stop (Fallback.fail): no later step may run
            raise self.fatal
        if key is None or pos is None:
            key, pos = scope.next(key_name or name)
        if shown_input is _NO_INPUT and policy is not None and policy.input is not None:
            shown_input = policy.input
        rec = self.check(scope, key, pos, digest, shown_input)
        if rec is not None and rec.status is not StepStatus.PENDING:
            return await self.replayed(scope, rec, annotation)
        if self.draining:  # the step boundary: steps in flight finish, no new one starts
            raise Drain()
        from keel.engine.recovery import PLAIN, run_live

        return await run_live(
            self, scope, key, pos, kind, name, digest, fn, annotation, policy or PLAIN, rec
        )

    def value(self, scope: Scope, name: str, make: Callable[[], Any]) -> Any:
        """A recorded non-deterministic value (time, uuid, random): buffered, no extra write."""
        key, pos = scope.next(name)
        rec = self.check(scope, key, pos, "")
        if rec is not None:
            return rec.output
        v = make()
        now = time.time()
        rec = self.record(scope, key, pos, StepKind.VALUE, name, "", now)
        rec.output = v
        self.buffer.append(StepWrite(rec, to_json(v, what=name)))
        self.journal.add(rec)
        return v

    # -- the run ------------------------------------------------------------------

    async def execute(self) -> RunStatus | None:
        """Run the workflow from the top; returns the status it left, None if abandoned."""
        hooks = self.rt.hooks
        if not hooks.active:
            return await self._execute()
        hooks.execution_started(self.run, self.resumed)
        status: RunStatus | None = None
        try:
            status = await self._execute()
            return status
        finally:
            hooks.execution_ended(self.run, status, self.error)

    async def _execute(self) -> RunStatus | None:
        store = self.rt.store
        self.journal = Journal(self.run.id, await store.load_steps(self.run.id))
        hooks = self.rt.hooks
        if hooks.active:
            hooks.run_started(self.run.id, self.run.workflow, self.resumed)
        from keel.engine.context import Context

        CURRENT_SCOPE.set((self, self.root))
        use_sources(self.rt.secrets)
        ctx = Context(self, self.root)
        status: RunStatus
        try:
            try:
                kwargs = self.wf.kwargs(self.run.input)
                result = await self.wf.fn(ctx, **kwargs)
                self.fatal = self.fatal or self._unreached()
                if self.fatal is not None:
                    raise self.fatal
                result_json = to_json(result, what=f"workflow {self.wf.name!r}")
            except (Suspend, Abandon, asyncio.CancelledError):
                raise
            except Exception as exc:
                if isinstance(exc, StoreError):
                    self.fault = self.fault or exc
                if self.fault is not None:  # a store fault never fails the run
                    raise Abandon() from None
                # a failure that skipped recorded steps is that divergence first
                self.fatal = self.fatal or self._unreached()
                failure = self.fatal or exc
                self.error = structured(failure)
                await self._finish(RunStatus.FAILED, None, self.error)
                status = RunStatus.FAILED
            else:
                if self.fault is not None:
                    raise Abandon()
                await self._finish(RunStatus.SUCCEEDED, result_json, None)
                status = RunStatus.SUCCEEDED
        except Suspend as s:
            if self.fault is not None:
                return None
            if self.fatal is not None:
                self.error = structured(self.fatal)
                await self._finish(RunStatus.FAILED, None, self.error)
                status = RunStatus.FAILED
            else:
                try:
                    status = await store.suspend_run(
                        self.run.id,
                        self.owner,
                        s.wake_at,
                        sorted(s.signals),
                        self._drain(),
                        time.time(),
                        self._state_json(),
                    )
                except LeaseLost:
                    return None
                if hooks.active:
                    hooks.run_suspended(self.run.id, self.run.workflow, sorted(s.signals))
        except Drain:  # the worker is stopping: back to the queue now, no lease wait
            await store.release_run(self.run.id, self.owner, self._drain(), time.time())
            return RunStatus.PENDING
        except Abandon:
            return None
        except asyncio.CancelledError:
            if not self.lost:  # graceful stop: hand the run straight back to the queue
                try:
                    await store.release_run(self.run.id, self.owner, self._drain(), time.time())
                except StoreError as exc:  # the lease expires instead; stay cancelled
                    self.fault = self.fault or exc
            raise
        except LeaseLost:
            return None
        if hooks.active and status.terminal:
            hooks.run_finished(self.run.id, self.run.workflow, status)
        return status

    def _state_json(self) -> bytes | None:
        state = self.root.state
        return to_json(state.snapshot(), what="state") if state is not None else None

    async def _finish(
        self, status: RunStatus, result: bytes | None, error: StructuredError | None
    ) -> None:
        state_json = self._state_json()
        try:
            await self.rt.store.finish_run(
                self.run.id,
                self.owner,
                status,
                result,
                error,
                state_json,
                self._drain(),
                time.time(),
            )
        except LeaseLost:
            raise Abandon() from None
