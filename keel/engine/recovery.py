"""The attempt loop behind every tool step: retries, budgets, breakers, validation, fallbacks.

Every attempt's outcome is journaled before the next one starts. A failed attempt
leaves a PENDING entry with its error and the time of the next attempt, so a
crash during a backoff resumes with the same attempt count and deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from keel.engine.control import Drain
from keel.engine.execution import (
    CURRENT_STEP,
    Abandon,
    RunExecution,
    StepInfo,
    Suspend,
)
from keel.engine.journal import Scope
from keel.engine.operation import Operation
from keel.engine.serde import adapter, from_json, revive, to_json, unannotated
from keel.engine.slots import Held
from keel.engine.waiting import wait_signal, wait_until
from keel.errors import (
    BudgetExceeded,
    CircuitOpen,
    EffectNotApplied,
    EscalationRejected,
    LeaseLost,
    NonDeterminismError,
    OutcomeUnknown,
    SerializationError,
    StoreError,
    ValidationFailed,
    call_window,
    from_structured,
    structured,
    validation_problems,
)
from keel.policy.breaker import BreakerState, CircuitBreaker
from keel.policy.fallback import Fallback
from keel.policy.retry import NO_RETRY, Retry
from keel.policy.validation import run_checks
from keel.types import (
    Escalation,
    EscalationPacket,
    StepKind,
    StepRecord,
    StepStatus,
    StructuredError,
)

Reconcile = Callable[[str], Awaitable[Any]]


@dataclass(frozen=True)
class StepPolicy:
    """How one step recovers; built from the tool's declaration and per-call overrides."""

    retry: Retry = NO_RETRY
    fallback: Fallback | None = None
    validate: tuple[Any, ...] = ()
    breaker: CircuitBreaker | None = None
    irreversible: bool = False
    reconcile: Reconcile | None = None
    input: Any = None  # what the step was called with, for escalation packets
    extra: dict[str, Any] = field(default_factory=dict)

    def with_input(self, value: Any) -> StepPolicy:
        return replace(self, input=value)


PLAIN = StepPolicy()
# Steps whose input the journal keeps (a tool's arguments; what a memory or session step
# asked for, which its trace span shows). A model call's request is in its output.
_INPUT_KEPT = (StepKind.TOOL, StepKind.MEMORY, StepKind.SESSION)


@dataclass
class _Step:
    """The identity of the step being attempted."""

    ex: RunExecution
    scope: Scope
    key: str
    pos: int
    kind: StepKind
    name: str
    digest: str
    annotation: Any
    policy: StepPolicy
    started: float

    log: list[dict[str, Any]] = field(default_factory=list)  # failed attempts so far
    gave_up: str | None = None  # why retrying stopped early (a deadline), for the error
    held: Held | None = None  # the step slot of the attempt in flight

    def free(self) -> None:
        """Give the step slot back (its outcome is journaled, or it never will be)."""
        if self.held is not None:
            self.held.give_back()
            self.held = None

    def record(self, **kw: Any) -> StepRecord:
        rec = self.ex.record(
            self.scope, self.key, self.pos, self.kind, self.name, self.digest, self.started, **kw
        )
        if self.kind in _INPUT_KEPT and self.policy.input is not None:
            rec.input = self.policy.input
        if self.log:
            rec.attempt_log = list(self.log)
        return rec


def _retries_granted(r: StepRecord) -> int:
    """Retries a journaled step has used: one per attempt after the first, plus the one
    granted to a step waiting out a backoff (its next attempt has not started yet)."""
    backoff = r.status is StepStatus.PENDING and r.error is not None and r.fallback is None
    return max(0, r.attempts - 1) + (1 if backoff else 0)


def _budget_used(ex: RunExecution, tool: str) -> int:
    used = ex.retries_used.get(tool)
    if used is None:  # first use in this execution: count what earlier executions granted
        used = sum(
            _retries_granted(r)
            for r in ex.journal.by_key.values()
            # a tool's and a model call's (`llm:<name>`) earlier attempts both count
            if r.name == tool and r.kind in (StepKind.TOOL, StepKind.LLM)
        )
        ex.retries_used[tool] = used
    return used


def _breaker(ex: RunExecution, tool: str, config: CircuitBreaker) -> BreakerState:
    state = ex.rt.breakers.get(tool)
    if state is None or state.config != config:
        state = ex.rt.breakers[tool] = BreakerState(config)
    return state


async def run_live(
    op: Operation,
    fn: Callable[[], Awaitable[Any]],
    annotation: Any,
    policy: StepPolicy,
) -> Any:
    """Attempt a step until it succeeds, then record it; or apply its fallback."""
    ex, scope, key, kind, name = op._ex, op.scope, op.key, op.kind, op.name
    rec = op.recorded
    step = _Step(
        ex,
        scope,
        key,
        op.pos,
        kind,
        name,
        op.digest,
        annotation,
        policy,
        rec.started_at if rec is not None else time.time(),
    )
    hooks = ex.rt.hooks
    if hooks.active:
        if hooks.wants("step_started"):
            hooks.step_started(ex.event(key, kind, name))
        if policy.input is not None and hooks.wants("step_recorded"):
            ex.inputs[key] = policy.input
    attempt = rec.attempts if rec is not None else 0
    if rec is not None and rec.attempt_log:
        step.log = list(rec.attempt_log)
    feedback: list[str] = []
    interrupted = False
    if rec is not None:  # resuming a step that had started
        if rec.fallback == "human" and rec.error is not None:
            return await _await_person(step, rec.error, attempt, resumed=True)
        if rec.error is not None:  # stopped during a backoff: same attempt count, same deadline
            feedback = list(rec.error.data.get("feedback", []))
            if rec.wake_at is not None:
                await wait_until(ex, rec.wake_at)
        elif policy.irreversible:
            interrupted = True
    # Each attempt holds a step slot from before its effect until its outcome is
    # journaled (keel.engine.slots), never while it waits out a backoff or a person.
    # Inside another step's effect (a tool making steps), that one's slot covers it.
    slots = ex.rt.step_slots() if CURRENT_STEP.get() is None else None
    last: BaseException | None = None
    first = True
    try:
        retry = policy.retry
        breaker = _breaker(ex, name, policy.breaker) if policy.breaker is not None else None
        while True:
            if breaker is not None and not breaker.allow():
                last = CircuitOpen(
                    f"circuit breaker for tool {name!r} is open after repeated failures; "
                    f"next probe in {breaker.retry_in():.1f}s",
                    tool=name,
                )
                break
            if slots is not None:
                step.held = slots.take_now() or await slots.take()
                if first and ex.draining:  # drained while it waited for a slot: never started
                    raise Drain()
            first = False
            probe = breaker is not None and breaker.probing  # this attempt is the half-open probe
            attempt += 1
            attempt_started = time.time()
            call = fn
            if interrupted:
                call = _after_interrupted_intent(ex, key, name, fn, policy.reconcile)
                interrupted = False
            elif policy.irreversible:
                await ex.commit(
                    scope, step.record(status=StepStatus.PENDING, attempts=attempt), None
                )
            token = CURRENT_STEP.set(StepInfo(ex.run.id, key, attempt, tuple(feedback)))
            try:
                value = await call()
                if policy.validate:
                    value, messages = run_checks(value, policy.validate)
                    if messages:
                        raise ValidationFailed(
                            f"output of {name!r} failed validation: {'; '.join(messages)}",
                            messages=messages,
                            output=_jsonable(value),
                        )
                data = to_json(value, what=f"step {key!r}")
                result = typed_output(name, value, data, step.annotation)
            except (Suspend, Abandon, asyncio.CancelledError, NonDeterminismError, LeaseLost):
                if probe and breaker is not None:
                    breaker.abandon()  # no verdict: let a later call probe instead
                raise
            except StoreError as exc:
                # Keel's own store failed under the effect (a cache or usage write): not the
                # step's error, never retried or journaled as its failure; the run stops
                # here and resumes from its journal once the store works again.
                if probe and breaker is not None:
                    breaker.abandon()
                raise ex.faulted(exc) from None
            except Exception as exc:
                last = exc
                if breaker is not None:
                    breaker.failure()
                if isinstance(exc, SerializationError):
                    exc.data["step"] = key
                    break
                feedback = (
                    list(exc.data.get("messages", [])) if isinstance(exc, ValidationFailed) else []
                )
                wake = _next_attempt_at(step, retry, attempt, exc)
                if wake is None:
                    break
                if isinstance(wake, BaseException):
                    last = wake
                    break
                err = structured(exc, step=key, attempts=attempt)
                if feedback:
                    err.data["feedback"] = feedback
                step.log.append(
                    {
                        "attempt": attempt,
                        "start": attempt_started,
                        "end": time.time(),
                        "error": err.type,
                        "message": err.message[:500],
                        "wake": wake,
                        # when the external call itself ran (a model call sets it): its span
                        "call": call_window(exc),
                    }
                )
                await ex.commit(
                    scope,
                    step.record(
                        status=StepStatus.PENDING, error=err, attempts=attempt, wake_at=wake
                    ),
                    None,
                )
                step.free()  # journaled: the backoff holds no slot
                if hooks.active:
                    hooks.step_retrying(ex.event(key, kind, name), attempt, wake)
                await wait_until(ex, wake)
                continue
            finally:
                CURRENT_STEP.reset(token)
            if breaker is not None:
                breaker.success()
            done = step.record(attempts=attempt)
            await ex.commit(scope, done, data)
            step.free()
            if hooks.active and hooks.wants("step_finished"):
                hooks.step_finished(ex.event(key, kind, name, done))
            return result
        assert last is not None
        return await _fall_back(step, last, attempt)
    finally:
        step.free()  # whatever ended it (a fallback, an abandon, a cancel): the slot is free


def typed_output(name: str, value: Any, data: bytes, annotation: Any) -> Any:
    """The step's value as its return type gives it, checked before it is journaled: a
    wrong type is a failed output (retried with feedback), never a stored bad result."""
    plain = from_json(data)
    if annotation is unannotated() or annotation is Any:
        return plain
    try:
        return adapter(annotation).validate_python(plain)
    except PydanticValidationError as exc:
        messages = validation_problems(exc, "(result)")
        raise ValidationFailed(
            f"{name!r} returned {type(value).__name__}, which does not fit its return type "
            f"{_type_name(annotation)}: {'; '.join(messages)}",
            messages=messages,
            output=_jsonable(value),
        ) from None
    except TypeError:  # an annotation Pydantic cannot check: keep the JSON value
        return plain


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _next_attempt_at(
    step: _Step, retry: Retry, attempt: int, exc: BaseException
) -> float | BaseException | None:
    """When to try again; None to give up; an error when a budget says no."""
    if attempt >= retry.attempts or not retry.should_retry(exc):
        return None
    delay = retry.delay(attempt, step.key, exc)
    # The wake-up is a timer (on the store's clock, as every timer); the deadline counts
    # from the step's start on this process's clock.
    wake = step.ex.rt.clock() + delay
    if retry.deadline is not None and time.time() + delay - step.started > retry.deadline:
        step.gave_up = (
            f"gave up after {attempt} attempt(s): the next one ({delay:.1f}s away) would "
            f"pass the retry deadline of {retry.deadline:g}s from the first attempt"
        )
        return None
    if retry.budget is not None:
        ex, tool = step.ex, step.name
        used = _budget_used(ex, tool)
        if used >= retry.budget:
            spent = BudgetExceeded(
                f"tool {tool!r} used its retry budget of {retry.budget} for this run "
                f"(last error: {type(exc).__name__}: {exc})",
                tool=tool,
                budget=retry.budget,
            )
            spent.__cause__ = exc
            return spent
        ex.retries_used[tool] = used + 1
    return wake


def _jsonable(value: Any) -> Any:
    try:
        return from_json(to_json(value, what="output"))
    except SerializationError:
        return repr(value)[:2000]


def _after_interrupted_intent(
    ex: RunExecution,
    key: str,
    name: str,
    fn: Callable[[], Awaitable[Any]],
    reconcile: Reconcile | None,
) -> Callable[[], Awaitable[Any]]:
    idem = StepInfo(ex.run.id, key, 0).idempotency_key

    async def decide() -> Any:
        if reconcile is None:
            raise OutcomeUnknown(
                f"tool {name!r} (step {key!r}) may or may not have taken effect: its worker "
                "stopped after recording the intent and before recording the result. Check "
                f"the outside system for idempotency key {idem!r}, or give the tool a "
                "reconcile= hook so Keel can decide by itself.",
                tool=name,
                idempotency_key=idem,
            )
        try:
            return await reconcile(idem)
        except EffectNotApplied:
            return await fn()

    return decide


async def _fall_back(step: _Step, exc: BaseException, attempts: int) -> Any:
    """The step failed for good: its declared fallback decides what happens next."""
    ex, key, name = step.ex, step.key, step.name
    err = structured(exc, step=key, attempts=attempts)
    err.data.setdefault("tool", name)
    if step.gave_up is not None:
        err = err.model_copy(update={"message": f"{err.message} ({step.gave_up})"})
        err.data["gave_up"] = step.gave_up
    window = call_window(exc)
    if window:  # when the model call itself ran: its span
        err.data.setdefault("call_window", list(window))
    fb = step.policy.fallback
    hooks = ex.rt.hooks
    unknown = isinstance(exc, OutcomeUnknown)
    if fb is None or isinstance(exc, SerializationError) or (unknown and fb.kind != "human"):
        # an unknown outcome is never degraded to a default: the effect may have happened
        failed = step.record(status=StepStatus.ERROR, error=err, attempts=attempts)
        await ex.commit(step.scope, failed, None)
        if hooks.wants("step_failed"):
            hooks.step_failed(ex.event(key, step.kind, name, failed))
        if isinstance(exc, SerializationError):
            raise exc
        raise from_structured(err) from exc
    err.fallback = fb.kind
    if fb.kind == "degrade":
        data = to_json(fb.default, what=f"fallback default of {name!r}")
        done = step.record(error=err, attempts=attempts)
        done.fallback = "degrade"
        await ex.commit(step.scope, done, data)
        if hooks.wants("step_finished"):
            hooks.step_finished(ex.event(key, step.kind, name, done))
        return fb.default
    if fb.kind == "fail":
        failed = step.record(status=StepStatus.ERROR, error=err, attempts=attempts)
        failed.fallback = "fail"
        await ex.commit(step.scope, failed, None)
        if hooks.wants("step_failed"):
            hooks.step_failed(ex.event(key, step.kind, name, failed))
        stop = from_structured(err)
        ex.fatal = stop  # a hard stop: the run fails even if the workflow catches this
        raise stop from exc
    return await _await_person(step, err, attempts, resumed=False)


def escalation_reason(tool: str, err: StructuredError, attempts: int) -> str:
    """The one line an escalation packet gives as why a failed tool needs a person."""
    if err.type == "OutcomeUnknown":
        return (
            f"outcome unknown: {err.message} If it took effect, resolve this with the "
            "result it had; if it did not, reject it (the step fails with "
            "EscalationRejected and the workflow decides what happens next)."
        )
    return f"tool {tool!r} failed after {attempts} attempt(s): {err.type}: {err.message}"


def journal_summary(ex: RunExecution, prefix: str, limit: int = 50) -> list[dict[str, Any]]:
    """What the run (or the phase under `prefix`) did so far, for an escalation packet."""
    return summarise(ex.journal.by_key.values(), prefix, limit)


def summarise(records: Iterable[StepRecord], prefix: str, limit: int = 50) -> list[dict[str, Any]]:
    """The last `limit` of `records` under `prefix`, as an escalation packet lists them."""
    recs = sorted(
        (r for r in records if r.key.startswith(prefix)),
        key=lambda r: (r.started_at, r.key),
    )[-limit:]
    out = []
    for r in recs:
        item: dict[str, Any] = {
            "key": r.key,
            "kind": r.kind.value,
            "status": r.status.value,
            "attempts": r.attempts,
        }
        if r.error is not None:
            item["error"] = f"{r.error.type}: {r.error.message}"
        elif r.output is not None:
            text = to_json(r.output, what="output").decode()
            item["output"] = text if len(text) <= 500 else text[:499] + "…"
        out.append(item)
    return out


async def escalate(
    ex: RunExecution,
    key: str,
    kind: str,
    packet: EscalationPacket,
    queue: str,
    marker: tuple[Scope, StepRecord, bytes | None],
    esc_id: str | None = None,
) -> str:
    """Record an escalation (once) atomically with the journal entry that marks the step
    as waiting for it (`marker`: its scope, record and output).
    Its id is `<run>:<key>` unless the step escalates more than once (`esc_id`)."""
    esc_id = esc_id or f"{ex.run.id}:{key}"
    escalation = Escalation(
        id=esc_id,
        run_id=ex.run.id,
        workflow=ex.run.workflow,
        queue=queue,
        kind=kind,
        step=key,
        packet=packet,
        created_at=time.time(),
    )
    scope, rec, data = marker
    await ex.commit(scope, rec, data, escalation=escalation)
    if ex.rt.hooks.active:
        ex.rt.hooks.escalated(ex.run.id, esc_id, queue)
    return esc_id


async def await_resolution(
    ex: RunExecution, key: str, esc_id: str, pos: int = 0, name: str = "resolution"
) -> dict[str, Any]:
    """Suspend until a person decides escalation `esc_id`; their decision, journaled
    as `<key>/<name>`."""
    child = Scope(path=f"{key}/", state=None)
    payload: dict[str, Any] = await wait_signal(
        ex, child, f"{key}/{name}", pos, f"escalation:{esc_id}", None
    )
    return payload


def result_schema(annotation: Any) -> dict[str, Any] | None:
    """The JSON schema of a tool's return type, when it has one to check against."""
    if annotation is unannotated():
        return None
    try:
        schema: dict[str, Any] = adapter(annotation).json_schema()
    except Exception:  # a type Pydantic cannot describe: the run still checks on resume
        return None
    return schema


async def _await_person(step: _Step, err: StructuredError, attempts: int, resumed: bool) -> Any:
    ex, key, name = step.ex, step.key, step.name
    err.fallback = "human"
    esc_id = f"{ex.run.id}:{key}"
    if not resumed:
        fb = step.policy.fallback
        packet = EscalationPacket(
            workflow=ex.run.workflow,
            run_id=ex.run.id,
            step=key,
            phase=step.scope.phase,
            tool=name,
            input=_jsonable(step.policy.input),
            journal=journal_summary(ex, step.scope.phase_prefix or ""),
            output=err.data.get("output"),
            reason=escalation_reason(name, err, attempts),
            error=err,
            messages=list(err.data.get("messages", [])),
            state=step.scope.state.snapshot() if step.scope.state is not None else None,
            result_schema=result_schema(step.annotation),
        )
        waiting = step.record(status=StepStatus.PENDING, error=err, attempts=attempts)
        waiting.fallback = "human"
        queue = fb.queue if fb is not None else "escalations"
        await escalate(ex, key, "tool", packet, queue, (step.scope, waiting, None))
    step.free()  # waiting for a person holds no slot
    decision = await await_resolution(ex, key, esc_id)
    by = decision.get("by", "someone")
    if decision.get("status") == "resolved":
        result = decision.get("result")
        bad: Exception | None = None
        try:
            value = revive(result, step.annotation)
        except Exception as exc:  # the person's answer does not fit the tool's return type
            value, bad = None, exc
        if bad is None:
            data = to_json(value, what=f"resolution of {esc_id}")
            done = step.record(error=err, attempts=attempts)
            done.fallback = "human"
            await ex.commit(step.scope, done, data)
            return revive(from_json(data), step.annotation)
        rejection: Exception = ValidationFailed(
            f"escalation {esc_id} was resolved by {by} with a result that does not fit tool "
            f"{name!r}'s return type: {bad}",
            messages=[str(bad)],
            step=key,
        )
    else:
        note = decision.get("reason") or decision.get("note") or "no reason given"
        rejection = EscalationRejected(
            f"escalation {esc_id} (tool {name!r}) was rejected by {by}: {note}",
            escalation=esc_id,
            by=by,
            step=key,
        )
    failed_err = structured(rejection, step=key, attempts=attempts)
    failed_err.fallback = "human"
    failed_err.cause = err
    failed = step.record(status=StepStatus.ERROR, error=failed_err, attempts=attempts)
    failed.fallback = "human"
    await ex.commit(step.scope, failed, None)
    raise from_structured(failed_err)
