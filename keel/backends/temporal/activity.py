"""Tool calls as Temporal activities: one generic activity type, `keel.call`.

A workflow's `ctx.call(tool, ...)` schedules `keel.call` with the tool's name, the step
key and digest, and the arguments by parameter name (what Keel journals too); the
activity finds the tool in the hosting App's registry and runs it.

Retries are Temporal's (each attempt is an activity attempt, so a retry survives the
worker dying and a backoff holds no worker slot), but WHEN and WHETHER to retry is
Keel's `Retry`, decided here per failed attempt: `should_retry` (give_up_on, retry_on,
transient errors), `delay` (full jitter, Retry-After), and `deadline` (from the first
attempt's scheduled time). The delay goes back to Temporal as `next_retry_delay`; a
final failure as a non-retryable `ApplicationError` carrying Keel's structured error,
which the workflow re-raises as the same Keel exception the engine raises.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
import typing
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio.exceptions import ApplicationError

from keel.backends.temporal import mirror
from keel.backends.temporal.intent import Recorded, once
from keel.backends.temporal.mirror import Entry, record
from keel.engine.control import CURRENT_STEP, StepInfo
from keel.engine.recovery import typed_output
from keel.engine.registry import ToolDef
from keel.engine.serde import from_json, revive, to_json
from keel.errors import (
    BudgetExceeded,
    CircuitOpen,
    ConfigError,
    OutcomeUnknown,
    SerializationError,
    ValidationFailed,
    structured,
)
from keel.policy.breaker import BreakerState
from keel.policy.retry import NO_RETRY
from keel.policy.validation import run_checks
from keel.types import StepKind, StructuredError

if TYPE_CHECKING:
    from keel.app import App
    from keel.policy.retry import Retry

ACTIVITY = "keel.call"
# Payloads over Temporal's 2 MB limit are kept in Keel's store (the claim check,
# claims.py), but not without bound: every replay of the run reads them back into the
# worker's memory. Data this large belongs in object storage, handed over by reference.
PAYLOAD_LIMIT = 64 * 1024 * 1024
# Without a tool timeout, how long one attempt may run before Temporal retries it.
DEFAULT_ATTEMPT_TIMEOUT = 600.0


def check_size(data: bytes, what: str) -> None:
    """Refuse a payload too large to carry through a run, saying what to do instead."""
    if len(data) > PAYLOAD_LIMIT:
        raise SerializationError(
            f"{what} is {len(data)} bytes, over Keel's {PAYLOAD_LIMIT // 2**20} MiB limit for "
            "one payload on Temporal (each replay reads it back into memory); return or pass "
            "less: keep the data elsewhere (object storage) and hand over a reference",
            size=len(data),
        )


def attempt_timeout(tool: ToolDef) -> timedelta:
    """Temporal's start-to-close bound of one attempt: past the tool's own `timeout=`,
    so Keel's timeout (and its message) fires first."""
    if tool.timeout is None:
        return timedelta(seconds=DEFAULT_ATTEMPT_TIMEOUT)
    return timedelta(seconds=tool.timeout * 1.5 + 5)


def call_args(tool: ToolDef, named: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Rebuild `(args, kwargs)` from the call's arguments by parameter name (as
    `ToolDef.named_args` made them), each revived as its parameter's type."""
    try:
        sig, hints = _shape(tool.fn)
    except TypeError:  # an unhashable callable: read its shape every call
        sig, hints = _shape.__wrapped__(tool.fn)
    if sig is None or not isinstance(named, dict):
        if isinstance(named, dict) and set(named) == {"args", "kwargs"}:
            return tuple(named["args"]), dict(named["kwargs"])
        return tuple(named if isinstance(named, list) else [named]), {}
    kinds = inspect.Parameter
    values: dict[str, Any] = {}
    for name, value in named.items():
        param = sig.parameters.get(name)
        plain = param is not None and param.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
        values[name] = revive(value, hints[name]) if plain and name in hints else value
    bound = inspect.BoundArguments(sig, values)
    return bound.args, bound.kwargs


@functools.lru_cache(maxsize=1024)
def _shape(fn: Callable[..., Any]) -> tuple[inspect.Signature | None, dict[str, Any]]:
    """A tool function's signature and resolved type hints, read once per function: per
    call they cost more than the rest of the activity's own work (bench/README.md)."""
    try:
        sig: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        return None, {}
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: pass the JSON values as they are
        hints = {}
    return sig, hints


def make_activity(app: App) -> Callable[..., Any]:
    """The `keel.call` activity over an App's registered tools; each call's outcome is
    also written to the App's store (keel.backends.temporal.mirror)."""
    from temporalio import activity

    tools = app.registry.tools
    breakers: dict[str, BreakerState] = {}  # one per tool in this worker process, as Keel's

    # `request` typed Any: temporalio then hands over the decoded JSON as it is, instead
    # of walking it to convert it to a dict hint it already is (per call, per step)
    @activity.defn(name=ACTIVITY)
    async def keel_call(request: Any) -> dict[str, Any]:
        with mirror.running():  # (its entry may then share a transaction with others')
            return await _call(request)

    async def _call(request: dict[str, Any]) -> dict[str, Any]:
        name, key = request["tool"], request["key"]
        tool = tools.get(name)
        if tool is None:
            err = structured(
                ConfigError(
                    f"tool {name!r} is not registered in the App this Temporal worker hosts; "
                    "register it with @app.tool in the module the worker loads"
                ),
                step=key,
            )
            raise ApplicationError(
                err.message, err.model_dump(mode="json"), type=err.type, non_retryable=True
            )
        info = activity.info()
        breaker = _breaker(breakers, tool)
        if breaker is not None and not breaker.allow():
            shut = CircuitOpen(
                f"circuit breaker for tool {name!r} is open after repeated failures; "
                f"next probe in {breaker.retry_in():.1f}s",
                tool=name,
            )
            done = attempt_of(request, info) - 1
            fail = failure(name, tool.retry, request, done, 0.0, shut, final=True)
            await _record(app, request, info, None, fail, done)
            raise fail
        probe = breaker is not None and breaker.probing
        # a retry the workflow schedules itself (keel.backends.temporal.attempts) carries
        # its attempt number and the previous attempt's feedback in the request
        attempt = attempt_of(request, info)
        feedback = tuple(request.get("feedback") or ()) or _feedback(info)
        step = StepInfo(info.workflow_id or "", key, attempt, feedback)
        token = CURRENT_STEP.set(step)  # keel.current_step(): idempotency key, feedback
        try:
            # inside: arguments that do not fit the tool's parameters fail as its error
            args, kwargs = call_args(tool, request["args"])
            value = await _effect(app, tool, request, info, attempt, args, kwargs)
            if isinstance(value, Recorded):  # an earlier attempt did it: never again
                data = value.data
            else:
                if tool.validate:
                    value, messages = run_checks(value, tool.validate)
                    if messages:
                        raise ValidationFailed(
                            f"output of {name!r} failed validation: {'; '.join(messages)}",
                            messages=messages,
                        )
                data = to_json(value, what=f"step {key!r}")
                check_size(data, f"the output of step {key!r}")
                typed_output(name, value, data, tool.return_type)
        except asyncio.CancelledError:
            if probe and breaker is not None:
                breaker.abandon()  # no verdict: let a later call probe instead
            raise
        except Exception as exc:
            if breaker is not None:
                breaker.failure()
            if isinstance(exc, ValidationFailed) and not info.is_local:
                # the next attempt reads them back from its info.heartbeat_details (a
                # local activity has none: its retries are scheduled by the workflow,
                # with the feedback in the request)
                activity.heartbeat({"feedback": list(exc.data.get("messages", []))})
            first = first_attempt_at(request, info)
            fail = failure(
                name,
                tool.retry,
                request,
                attempt,
                first,
                exc,
                final=isinstance(exc, OutcomeUnknown),  # never re-run an unknown effect
            )
            await _record(app, request, info, None, fail, attempt)
            raise fail from exc
        finally:
            CURRENT_STEP.reset(token)
        if breaker is not None:
            breaker.success()
        await _record(app, request, info, data, None, attempt)
        return {
            "key": key,
            "digest": request["digest"],
            "output": from_json(data),
            "attempts": attempt,
        }

    return keel_call


async def _effect(
    app: App,
    tool: ToolDef,
    request: dict[str, Any],
    info: Any,
    attempt: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """The tool's effect: its output (cut to keep=, the full one written aside), run at
    most once for an irreversible tool (keel.backends.temporal.intent)."""

    async def effect() -> Any:
        value = await tool.invoke(args, kwargs)
        if tool.keep is not None:
            value = await _keep(app, tool, request, info, value)
        return value

    if not tool.irreversible or "scope" not in request:
        return await effect()
    reconcile = None
    if tool.reconcile is not None:

        async def reconcile(idem: str) -> Any:
            return await tool.run_reconcile(idem, args, kwargs)

    return await once(app.store, _entry(request, info, attempt), effect, reconcile, tool.name)


async def _keep(app: App, tool: ToolDef, request: dict[str, Any], info: Any, full: Any) -> Any:
    """`full` cut to the tool's keep= model; the full output written to Keel's store
    aside, at `<key>/full#0`, out of line, as Keel's engine journals it (keel.engine.keep)."""
    from pydantic import BaseModel

    from keel.engine.keep import cut

    keep = tool.keep
    data = to_json(full, what=f"output of tool {tool.name!r}")
    if isinstance(full, BaseModel):
        names = list(full.model_dump())
    else:
        names = list(full) if isinstance(full, dict) else []
    if "scope" in request:
        key = request["key"]
        aside = Entry(
            run_id=info.workflow_id or "",
            key=f"{key}/full#0",
            scope=f"{key}/",
            position=0,
            kind=StepKind.VALUE,
            name="full",
            digest="",
            started=time.time(),
            attempts=1,
            data=data,
            input={"kept": [n for n in keep.model_fields if n in names], "of": len(names)},
            out_of_line=True,
        )
        await record(app.store, aside)
    return cut(tool.name, keep, full)


def _entry(request: dict[str, Any], info: Any, attempt: int, **outcome: Any) -> Entry:
    return Entry(
        run_id=info.workflow_id or "",
        key=request["key"],
        scope=request["scope"],
        position=request["pos"],
        kind=StepKind.TOOL,
        name=request["tool"],
        digest=request["digest"],
        started=first_attempt_at(request, info),
        attempts=max(attempt, 1),
        input=request["args"],
        **outcome,
    )


async def _record(
    app: App, request: dict[str, Any], info: Any, data: bytes | None, fail: Any, attempt: int
) -> None:
    """Write the call's outcome to Keel's store: a success, or a failure that is final.
    A failed attempt to be retried is not an outcome yet; it is written (PENDING, with
    its error) when the next attempt must know it ended: an irreversible tool's, or a
    retry the workflow schedules."""
    if "scope" not in request:  # scheduled by a worker from before the store was written
        return
    tool = app.registry.tools.get(request["tool"])
    again = fail is not None and retried(fail)
    if again and not (tool is not None and tool.irreversible) and "attempt" not in request:
        return
    err = None if fail is None else StructuredError.model_validate(fail.details[0])
    fallback = None if err is None or tool is None or not tool.fallback else tool.fallback.kind
    entry = _entry(
        request,
        info,
        attempt,
        data=data,
        error=err,
        fallback=None if again else fallback,
        pending=again,
    )
    await record(app.store, entry)


def attempt_of(request: dict[str, Any], info: Any) -> int:
    """The attempt an activity (`info`) runs for step `request`: Temporal's count, after
    those the workflow scheduled itself (a retry budget, a local tool's feedback)."""
    return int(request.get("attempt", 1)) + int(info.attempt) - 1


def first_attempt_at(request: dict[str, Any], info: Any) -> float:
    """When step `request` started (its retry deadline counts from then, as on Keel's
    engine); a request from before it said so: when Temporal first scheduled it."""
    return float(request.get("started") or info.scheduled_time.timestamp())


def retried(fail: Any) -> bool:
    """Whether another attempt follows the failed one `fail` reports (Temporal's, or one
    the workflow schedules itself).

    Example: `await record(store, replace(entry, pending=retried(fail)))`
    """
    return not fail.non_retryable or _retry_in(fail) is not None


def _retry_in(fail: Any) -> float | None:
    """The delay before the next attempt the workflow schedules itself, if any."""
    step = fail.details[1] if len(fail.details) > 1 else {}
    delay = step.get("retry_in") if isinstance(step, dict) else None
    return None if delay is None else float(delay)


def _feedback(info: Any) -> tuple[str, ...]:
    """Why the previous attempt's output failed validation (Keel's retry feedback)."""
    for detail in info.heartbeat_details:
        if isinstance(detail, dict) and isinstance(detail.get("feedback"), list):
            return tuple(str(m) for m in detail["feedback"])
    return ()


def _breaker(breakers: dict[str, BreakerState], tool: ToolDef) -> BreakerState | None:
    if tool.breaker is None:
        return None
    state = breakers.get(tool.name)
    if state is None or state.config != tool.breaker:
        state = breakers[tool.name] = BreakerState(tool.breaker)
    return state


def failure(
    name: str,
    retry: Retry | None,
    request: dict[str, Any],
    attempt: int,
    first: float,
    exc: Exception,
    *,
    final: bool = False,
) -> ApplicationError:
    """The ApplicationError that tells Temporal whether and when to try again. Its
    details: Keel's structured error, then the step it was (key and digest: replay
    checks a failed step's arguments too). A request the workflow retries itself
    (it carries "attempt") is never retried by Temporal: the delay Keel picked goes
    back in the step as "retry_in". A request with "budget_left" retries only while
    the run's retry budget for the tool lasts (else `keel.BudgetExceeded`)."""
    from temporalio.exceptions import ApplicationError

    key = request["key"]
    retry = retry or NO_RETRY
    err = structured(exc, step=key, attempts=attempt)
    delay: float | None = None
    retryable = not final and not isinstance(exc, SerializationError) and attempt < retry.attempts
    if retryable and retry.should_retry(exc):
        delay = retry.delay(attempt, key, exc)
        if retry.deadline is not None and time.time() + delay - first > retry.deadline:
            gave_up = (
                f"gave up after {attempt} attempt(s): the next one ({delay:.1f}s away) would "
                f"pass the retry deadline of {retry.deadline:g}s from the first attempt"
            )
            err = err.model_copy(update={"message": f"{err.message} ({gave_up})"})
            err.data["gave_up"] = gave_up
            delay = None
    left = request.get("budget_left")
    if delay is not None and left is not None and left <= 0:
        err = budget_spent(name, int(request["budget"]), err, attempt)
        delay = None
    err.data.setdefault("tool", name)
    step: dict[str, Any] = {"key": key, "digest": request["digest"]}
    if "attempt" in request:  # the workflow schedules the next attempt, if any
        step.update(retry_in=delay, attempt=attempt)
        delay = None
    return ApplicationError(
        err.message,
        err.model_dump(mode="json"),
        step,
        type=err.type,
        non_retryable=delay is None,
        # Temporal reads a zero delay as "none given": the smallest real one instead
        next_retry_delay=None if delay is None else timedelta(seconds=max(delay, 0.001)),
    )


def budget_spent(tool: str, budget: int, last: StructuredError, attempt: int) -> StructuredError:
    """`keel.BudgetExceeded` for a tool whose run used its retry budget, `last` (the
    attempt's own error) as its cause, worded as on Keel's engine."""
    spent = BudgetExceeded(
        f"tool {tool!r} used its retry budget of {budget} for this run "
        f"(last error: {last.type}: {last.message})",
        tool=tool,
        budget=budget,
    )
    err = structured(spent, step=last.step, attempts=attempt)
    return err.model_copy(update={"cause": last})


def keel_error(exc: BaseException) -> tuple[StructuredError, dict[str, Any]] | None:
    """The Keel error the `keel.call` activity failed with, found in `exc`'s causes, and
    the step (key, digest) it was scheduled as."""

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ApplicationError) and seen.details:
            details = list(seen.details)
            step = details[1] if len(details) > 1 and isinstance(details[1], dict) else {}
            return StructuredError.model_validate(details[0]), step
        seen = getattr(seen, "cause", None)
    return None


__all__ = [
    "ACTIVITY",
    "PAYLOAD_LIMIT",
    "attempt_of",
    "attempt_timeout",
    "budget_spent",
    "call_args",
    "check_size",
    "failure",
    "first_attempt_at",
    "make_activity",
    "retried",
]
