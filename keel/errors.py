"""Keel's error taxonomy.

Every error a user can hit says what happened, why, and what to do next, and
carries structured fields. Errors that cross the journal are rebuilt from their
structured form on replay, never unpickled.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

from keel.types import StructuredError

_REGISTRY: dict[str, type[KeelError]] = {}


class KeelError(Exception):
    """Base class of every error Keel raises.

    Example:
        try:
            app.run(triage, {"ticket": t})
        except keel.KeelError as e:
            print(e.to_structured().model_dump_json())
    """

    fields: ClassVar[tuple[str, ...]] = ()
    # Set when rebuilt from a journal entry (`from_structured`): that record is the
    # authoritative structured form (attempts, fallback, cause chain included).
    _structured: StructuredError | None = None

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        for name, value in data.items():
            setattr(self, name, value)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        _REGISTRY[cls.__name__] = cls

    def to_structured(
        self, step: str | None = None, attempts: int | None = None
    ) -> StructuredError:
        if self._structured is not None:
            given = {"step": step, "attempts": attempts}
            return self._structured.model_copy(
                update={k: v for k, v in given.items() if v is not None}
            )
        return StructuredError(
            type=type(self).__name__,
            types=_type_names(type(self)),
            message=self.message,
            step=step or self.data.get("step"),
            attempts=attempts,
            data={k: v for k, v in self.data.items() if k != "step"},
        )


_REGISTRY["KeelError"] = KeelError


def _type_names(cls: type[BaseException]) -> list[str]:
    return [c.__name__ for c in cls.__mro__ if issubclass(c, BaseException)]


class ConfigError(KeelError):
    """Keel was configured or called in a way it cannot honour."""


class Conflict(ConfigError):
    """It is already done or taken: a decision made once already, a name in use."""


class InputError(KeelError):
    """A workflow's input did not validate against its signature."""


class SecretUnavailable(KeelError):
    """A `keel.Secret`'s source has no value for it in this process (an environment
    variable not set, a file missing, no resolver registered for its scheme).
    `.ref` is the reference; the message says what to set."""


class UnknownWorkflowError(KeelError):
    """No workflow with that name is registered."""


class RunNotFound(KeelError):
    """No run with that id is in the store."""


class MemoryNotFound(KeelError):
    """No long-term memory with that id (never added, or forgotten); `.memory_id` is it."""


class StateValidationError(KeelError):
    """A value assigned to a workflow's typed state was rejected."""


class NonDeterminismError(KeelError):
    """Replay reached a different step than the journal recorded."""


class StepError(KeelError):
    """A journaled step failed; `.error` holds its structured form (live and on replay).

    Every failure a `ctx.call`, `ctx.map`, `ctx.llm`, `ctx.approval`, `ctx.wait_for`
    or `ctx.phase` can raise is a `StepError`, so one `except` catches them all:
    a tool's own exception (wrapped), a timeout, failed validation or a wrong return
    type (`ValidationFailed`), a spent retry budget, an open breaker, an unknown
    outcome, a person's rejection, a missed deadline.

    Example:
        try:
            await ctx.call(charge, order)
        except keel.StepError as e:
            if e.matches(TimeoutError): ...
    """

    def __init__(self, message: str, *, error: StructuredError | None = None, **data: Any) -> None:
        super().__init__(message, **data)
        self._error = error  # a foreign exception's record, kept exactly as journaled

    @property
    def error(self) -> StructuredError:
        return self._error if self._error is not None else self.to_structured()

    @error.setter
    def error(self, value: StructuredError) -> None:
        self._error = value

    def matches(self, *exc_types: type[BaseException] | str) -> bool:
        """True if the original exception was an instance of any of `exc_types`."""
        names = set(self.error.types or [self.error.type])
        return any((t if isinstance(t, str) else t.__name__) in names for t in exc_types)

    def to_structured(
        self, step: str | None = None, attempts: int | None = None
    ) -> StructuredError:
        if self._error is not None:
            return self._error
        return super().to_structured(step, attempts)


class SerializationError(StepError):
    """A value cannot be stored as JSON: a step's output, a result, a signal's payload."""


class OutcomeUnknown(StepError):
    """An irreversible tool's worker died after its intent was recorded and before its result.

    Keel never re-runs such a step blindly: the tool's `reconcile` hook decides, or
    the step fails with this error for a person to resolve.
    """


class EffectNotApplied(KeelError):
    """Raised by a `reconcile` hook: the effect did not happen, so running the tool is safe.

    Example:
        async def check_sent(key: str, ticket_id: str, body: str) -> Receipt:
            receipt = outbox.find(key)
            if receipt is None:
                raise keel.EffectNotApplied("never sent")
            return receipt
    """


class RetryableError(StepError):
    """Raise from a tool to ask for a retry (optionally after `retry_after` seconds).

    Example: `raise keel.RetryableError("index still building", retry_after=5)`
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **data: Any) -> None:
        super().__init__(message, retry_after=retry_after, **data)


class ValidationFailed(StepError):
    """A step's output failed its `validate=` checks; `.messages` say why.

    Retried with the messages handed to the next attempt (`keel.current_step().feedback`).
    """

    def __init__(self, message: str, *, messages: list[str] | None = None, **data: Any) -> None:
        super().__init__(message, messages=list(messages or []), **data)


class BudgetExceeded(StepError):
    """A tool used up its retry budget for this run; the fallback applies."""


class CircuitOpen(StepError):
    """The tool's circuit breaker is open in this worker; the fallback applies."""


class CheckpointFailed(StepError):
    """A phase's checkpoint validator rejected the state at the end of the phase."""

    def __init__(self, message: str, *, messages: list[str] | None = None, **data: Any) -> None:
        super().__init__(message, messages=list(messages or []), **data)


class EscalationRejected(StepError):
    """A person rejected an escalation (a failed tool or phase) instead of resolving it."""


class LowConfidence(StepError):
    """A structured output scored below `min_confidence`; `.output` and `.score` say what."""


class CassetteMiss(StepError):
    """A model request has no recording in the cassette being replayed."""


class ModelUnavailable(RetryableError):
    """Every model in the route (and its fallbacks) failed or is cooling down."""


class AgentTurnLimit(StepError):
    """An agent loop used all its turns (or its invalid-tool-call budget) without finishing."""


class ContextOverflow(StepError):
    """A model call's pinned context (task, schema, tools) alone exceeds its token budget."""


class ApprovalRejected(StepError):
    """A person rejected the proposed action (or it timed out under a reject policy)."""


class ApprovalTimedOut(StepError):
    """No decision arrived before the deadline and the policy is to fail the run."""


class ReviewRejected(StepError):
    """A reviewer rejected a low-confidence output or a novel input."""


class MapFailed(StepError):
    """A map or gather did not meet its `require` policy; `.result` has every item."""


class SignalTimeout(StepError, TimeoutError):
    """`ctx.wait_for` reached its timeout before the signal arrived."""


class LeaseLost(KeelError):
    """This worker no longer owns the run (another worker took it over)."""


class SignalRefused(KeelError):
    """A signal was not delivered: the run has ended, or (without `queue=True`) it is not
    waiting for that name. `.waiting_on` lists what the run waits for."""


class StoreError(KeelError):
    """The store cannot be opened, read or written (corrupt file, read-only, disk full).

    Nothing was written by the failed operation, and no run fails because of it: a
    worker stops and its runs resume once the store is writable again.
    """


class PayloadUnreadable(StoreError):
    """A stored payload cannot be decoded: it was encrypted with a key this process is
    not given (`.key_id`), or it does not authenticate (changed, moved, or a different
    key under that id). Nothing is returned in its place, and no run fails because of
    it: a worker stops until it is started with the right keys."""


class RunFailed(KeelError):
    """The run ended FAILED; `.error` is the run's structured error."""

    def __init__(self, message: str, *, error: StructuredError | None = None, **data: Any) -> None:
        super().__init__(message, **data)
        self.error = error


class RunCancelled(KeelError):
    """The run was cancelled before it finished."""


class RunSuspended(KeelError):
    """The run is WAITING (for a signal or a timer) and did not finish in time."""


def from_structured(err: StructuredError) -> KeelError:
    """Rebuild the Keel error a journal entry recorded (foreign errors become StepError)."""
    cls = _REGISTRY.get(err.type)
    if cls is None or cls in (StepError, KeelError):
        where = f"step {err.step!r} failed" if err.step else "step failed"
        if err.attempts and err.attempts > 1:
            where += f" after {err.attempts} attempts"
        return StepError(f"{where}: {err.type}: {err.message}", error=err)
    data = {**err.data, "step": err.step} if err.step else err.data
    try:
        exc = cls(err.message, **data)
    except TypeError:
        return StepError(err.message, error=err)
    exc._structured = err
    return exc


def structured(
    exc: BaseException, step: str | None = None, attempts: int | None = None
) -> StructuredError:
    """The structured, JSON-safe form of any exception, with its cause chain."""
    if isinstance(exc, KeelError):
        err = exc.to_structured(step=step, attempts=attempts)
        if step and not err.step:
            err = err.model_copy(update={"step": step})
    else:
        err = StructuredError(
            type=type(exc).__name__,
            types=_type_names(type(exc)),
            message=str(exc) or type(exc).__name__,
            step=step,
            attempts=attempts,
        )
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    rebuilt = getattr(exc, "_structured", None) is not None or (
        isinstance(exc, StepError) and exc._error is not None
    )
    if cause is not None and err.cause is None and not rebuilt:
        err = err.model_copy(update={"cause": structured(cause)})
    return err


# -- when a failed external call ran --------------------------------------------------------

# The attribute a layer that makes external calls (the LLM gateway) sets on the error a
# call raised: `(start, end)`, epoch seconds, of the call itself. The engine journals it
# with the failed attempt, so that attempt's trace span is the call, not the setup
# before it (LiteLLM's first import, a rate-limit wait).
CALL_WINDOW = "keel_call_window"


def mark_call_window(exc: BaseException, start: float, end: float) -> None:
    """Note on `exc` when the call it came from ran (`call_window` reads it)."""
    with contextlib.suppress(AttributeError, TypeError):  # an exception without a dict
        setattr(exc, CALL_WINDOW, (start, end))


def call_window(exc: BaseException) -> tuple[float, float] | None:
    """When the call `exc` came from ran, if whoever raised it said (`mark_call_window`)."""
    window: tuple[float, float] | None = getattr(exc, CALL_WINDOW, None)
    return window


def validation_problems(exc: Any, whole: str | None = "(value)") -> list[str]:
    """`where: what` for each error of a Pydantic `ValidationError`, as Keel's messages
    put them (`whole` names an error about the value itself; None: the message alone)."""
    out = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e["loc"])
        out.append(f"{where or whole}: {e['msg']}" if where or whole is not None else e["msg"])
    return out
