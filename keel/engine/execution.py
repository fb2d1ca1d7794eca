"""Executing one run: the journaled-step primitive, replay, suspension and the run's end."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from keel.engine.control import (
    CURRENT_STEP,
    Abandon,
    Drain,
    StepInfo,
    Suspend,
    current_step,
)
from keel.engine.hooks import StepEvent
from keel.engine.journal import Journal, Scope, live_degraded, superseded_attempts
from keel.engine.operation import NOT_SHOWN, Operation
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
from keel.types import (
    Escalation,
    ReviewRequest,
    RunInfo,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    StructuredError,
)

if TYPE_CHECKING:
    from keel.engine.context import Context
    from keel.engine.phase import Phase
    from keel.engine.plugins import Features
    from keel.engine.recovery import StepPolicy
    from keel.engine.registry import ToolDef
    from keel.policy.completion import CompletionPolicy
    from keel.types import MapResult


CURRENT_SCOPE: ContextVar[tuple[RunExecution, Scope] | None] = ContextVar(
    "keel_current_scope", default=None
)


_NO_INPUT: Any = NOT_SHOWN
# A new request's decision fields (all None): left out of the review_requested payload.
_UNDECIDED = {"decision", "decided_at", "decided_by"}


def recorded_input(rec: StepRecord) -> Any:
    """What a recorded step was called with, as far as the journal knows it."""
    if rec.input is not None:
        return rec.input
    if rec.kind is StepKind.LLM and isinstance(rec.output, dict):
        return rec.output.get("request")
    return f"(inputs not recorded; digest {rec.digest})"


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
        self.fault_at = 0.0  # time.monotonic() when it was met
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

    async def commit(
        self,
        scope: Scope,
        rec: StepRecord,
        data: bytes | None,
        *,
        review: ReviewRequest | None = None,
        escalation: Escalation | None = None,
    ) -> bool:
        """Persist a step entry (and pending deterministic values, and the request to a
        person it opens) atomically; True when that request is new."""
        if scope.state is not None and rec.status is not StepStatus.PENDING:
            delta = scope.state.delta()
            if delta is not None and rec.state_delta:  # keep one the caller took (wait_for)
                rec.state_delta = compose(rec.state_delta, delta, scope.state.snapshot())
            elif delta is not None:
                rec.state_delta = delta
        write = self._write_for(rec, data)
        if rec.status is not StepStatus.PENDING:
            write.usage = self.meters.pop(rec.key, None)
        if data is not None and rec.blob is None and rec.output is None and len(data) <= 4096:
            rec.output = from_json(data)  # the in-memory journal mirrors the stored one
        opened = await self.persist(
            [write],
            reviews=() if review is None else (review,),
            escalations=() if escalation is None else (escalation,),
        )
        self.journal.add(rec)
        self.recorded(rec, data)
        if review is not None and opened and self.rt.hooks.active:
            self.rt.hooks.review_requested(review.model_dump(exclude=_UNDECIDED))
        return bool(opened)

    async def persist(
        self,
        writes: Sequence[StepWrite],
        *,
        reviews: Sequence[ReviewRequest] = (),
        escalations: Sequence[Escalation] = (),
    ) -> frozenset[str]:
        """THE write of a run's steps: journal entries (with their usage), the deterministic
        values buffered before them, and the requests to people they open, all in one
        transaction under this worker's lease. Returns the ids of requests it created.

        Every journal write the engine and the features make for a step comes through
        here (run transitions and signal takes have their own store calls), so a lost
        lease or a failing store is handled once: the run is abandoned, nothing written.
        """
        batch = self._drain()  # the buffer's own list, swapped out: ours to extend
        batch.extend(writes)
        uow = UnitOfWork(self.run.id, self.owner, batch, list(reviews), list(escalations))
        try:
            committed = await self.rt.store.commit(uow)
        except LeaseLost:
            self.lost = True
            raise Abandon() from None
        except StoreError as exc:
            raise self.faulted(exc) from None
        return committed.opened

    async def take_signal(
        self, signal: str, write: StepWrite, writes: Sequence[StepWrite]
    ) -> bytes | None:
        """Consume a `signal` and journal `write` with its payload (and `writes`, with the
        buffered values) atomically; None when none is waiting. Abandons like `persist`."""
        try:
            return await self.rt.store.take_signal(
                self.run.id, self.owner, signal, write, [*self._drain(), *writes]
            )
        except LeaseLost:
            self.lost = True
            raise Abandon() from None
        except StoreError as exc:
            raise self.faulted(exc) from None

    def faulted(self, exc: StoreError) -> Abandon:
        """Note that the store failed under this execution and return the `Abandon` to
        raise: the run stops here without writing (a step whose effect ran is not
        journaled as failed) and resumes from its journal once the store works again."""
        if self.fault is None:
            self.fault, self.fault_at = exc, time.monotonic()
        return Abandon()

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
            try:
                value = from_json(await self.rt.store.load_blob(rec.blob))
            except StoreError as exc:  # never seen by the workflow, which could catch it
                raise self.faulted(exc) from None
        return revive(value, annotation)

    def event(
        self, key: str, kind: StepKind, name: str, rec: StepRecord | None = None
    ) -> StepEvent:
        return StepEvent(self.run.id, self.run.workflow, key, kind.value, name, rec)

    # -- the generic durable step -------------------------------------------------

    def operation(
        self,
        scope: Scope,
        kind: StepKind,
        name: str,
        digest: str,
        *,
        key_name: str | None = None,
        key: str | None = None,
        pos: int | None = None,
        shown_input: Any = _NO_INPUT,
    ) -> Operation:
        """Open the journaled operation at the next key of `scope` (or at `key`/`pos`),
        checked against the journal (NonDeterminismError if replay diverged)."""
        if self.fatal is not None:  # a hard stop (Fallback.fail): no later step may run
            raise self.fatal
        if key is None or pos is None:
            key, pos = scope.next(key_name or name)
        rec = self.check(scope, key, pos, digest, shown_input)
        return Operation(self, scope, kind, name, digest, key, pos, rec)

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
        """Run `fn` as a journaled operation under `policy`; on replay return what it
        recorded. `shown_input` is what a NonDeterminismError shows as the new input
        (default: the policy's input)."""
        if self.fatal is not None:  # a hard stop (Fallback.fail): no later step may run
            raise self.fatal
        if key is None or pos is None:
            key, pos = scope.next(key_name or name)
        if shown_input is _NO_INPUT and policy is not None and policy.input is not None:
            shown_input = policy.input
        rec = self.check(scope, key, pos, digest, shown_input)
        # `operation(...).run(...)` written out: this is every tool call's hot path
        if rec is not None and rec.status is not StepStatus.PENDING:
            return await self.replayed(scope, rec, annotation)
        if self.draining:  # the step boundary: steps in flight finish, no new one starts
            raise Drain()
        from keel.engine.recovery import PLAIN, run_live

        op = Operation(self, scope, kind, name, digest, key, pos, rec)
        return await run_live(op, fn, annotation, policy or PLAIN)

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

    # -- the rest of the execution port (keel.engine.port) ----------------------------

    @property
    def features(self) -> Features:
        return self.rt.features

    @property
    def tools(self) -> Mapping[str, ToolDef]:
        return self.rt.registry.tools

    def current(self, bound: Scope) -> Scope:
        cur = CURRENT_SCOPE.get()
        if cur is not None and cur[0] is self:
            return cur[1]
        return bound

    async def sleep(self, scope: Scope, seconds: float) -> None:
        from keel.engine.waiting import sleep

        await sleep(self, scope, seconds)

    async def wait_signal(self, scope: Scope, signal: str, timeout: float | None) -> Any:
        from keel.engine.waiting import wait_signal

        key, pos = scope.next(f"signal:{signal}")
        return await wait_signal(self, scope, key, pos, signal, timeout)

    async def map(
        self,
        scope: Scope,
        fn: Callable[[Context, Any], Awaitable[Any]] | None,
        tool: ToolDef | None,
        label: str,
        items: list[Any],
        concurrency: int | None,
        require: CompletionPolicy,
    ) -> MapResult[Any]:
        from keel.engine.fanout import map_items

        return await map_items(self, scope, fn, tool, label, items, concurrency, require)

    async def gather(
        self, scope: Scope, awaitables: tuple[Awaitable[Any], ...], require: CompletionPolicy
    ) -> MapResult[Any]:
        from keel.engine.fanout import gather

        return await gather(self, scope, awaitables, require)

    def phase(
        self, ctx: Context, name: str, check: Any, retries: int, on_fail: str, queue: str
    ) -> Phase:
        from keel.engine.phase import Phase

        return Phase(self, ctx.current_scope(), ctx, name, check, retries, on_fail, queue)

    def degraded(self) -> list[str]:
        records = self.journal.by_key.values()
        degraded = [r.key for r in records if r.fallback == "degrade"]
        if not degraded:
            return []
        attempts = [r.key for r in records if r.kind is StepKind.PHASE]
        return live_degraded(degraded, superseded_attempts(attempts, [r.key for r in records]))

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
                    self.faulted(exc)
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
                        self.rt.clock(),
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
                    self.faulted(exc)
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


__all__ = [
    "CURRENT_SCOPE",
    "CURRENT_STEP",
    "Abandon",
    "Drain",
    "RunExecution",
    "StepInfo",
    "Suspend",
    "current_step",
]
