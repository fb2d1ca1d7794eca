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
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from keel.engine.control import CURRENT_STEP, StepInfo
from keel.engine.recovery import typed_output
from keel.engine.registry import ToolDef
from keel.engine.serde import from_json, revive, to_json
from keel.errors import CircuitOpen, ConfigError, SerializationError, ValidationFailed, structured
from keel.policy.breaker import BreakerState
from keel.policy.retry import NO_RETRY
from keel.policy.validation import run_checks

ACTIVITY = "keel.call"
# Temporal refuses a payload over 2 MB (and retries the task that sent it); Keel refuses
# it first, with a clear error, until its claim check for Temporal exists (docs/temporal.md).
PAYLOAD_LIMIT = 2 * 1024 * 1024 - 16 * 1024  # room for the envelope around the value
# Without a tool timeout, how long one attempt may run before Temporal retries it.
DEFAULT_ATTEMPT_TIMEOUT = 600.0


def check_size(data: bytes, what: str) -> None:
    """Refuse a payload Temporal would refuse, saying what to do instead."""
    if len(data) > PAYLOAD_LIMIT:
        raise SerializationError(
            f"{what} is {len(data)} bytes, over Temporal's 2 MB payload limit; return or "
            "pass less (keep the data elsewhere and hand over a reference). Keel's claim "
            "check for large payloads on Temporal is not built yet.",
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


def make_activity(tools: Mapping[str, ToolDef]) -> Callable[..., Any]:
    """The `keel.call` activity over an App's registered tools."""
    from temporalio import activity
    from temporalio.exceptions import ApplicationError

    breakers: dict[str, BreakerState] = {}  # one per tool in this worker process, as Keel's

    @activity.defn(name=ACTIVITY)
    async def keel_call(request: dict[str, Any]) -> dict[str, Any]:
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
            raise _failure(tool, request, info.attempt - 1, 0.0, shut, final=True)
        probe = breaker is not None and breaker.probing
        step = StepInfo(info.workflow_id or "", key, info.attempt, _feedback(info))
        token = CURRENT_STEP.set(step)  # keel.current_step(): idempotency key, feedback
        try:
            # inside: arguments that do not fit the tool's parameters fail as its error
            args, kwargs = call_args(tool, request["args"])
            value = await tool.invoke(args, kwargs)
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
                # local activity has no heartbeats: its attempts get no feedback yet)
                activity.heartbeat({"feedback": list(exc.data.get("messages", []))})
            first = info.scheduled_time.timestamp()
            raise _failure(tool, request, info.attempt, first, exc) from exc
        finally:
            CURRENT_STEP.reset(token)
        if breaker is not None:
            breaker.success()
        return {
            "key": key,
            "digest": request["digest"],
            "output": from_json(data),
            "attempts": info.attempt,
        }

    return keel_call


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


def _failure(
    tool: ToolDef,
    request: dict[str, Any],
    attempt: int,
    first: float,
    exc: Exception,
    *,
    final: bool = False,
) -> Exception:
    """The ApplicationError that tells Temporal whether and when to try again. Its
    details: Keel's structured error, then the step it was (key and digest: replay
    checks a failed step's arguments too)."""
    from temporalio.exceptions import ApplicationError

    key = request["key"]
    retry = tool.retry or NO_RETRY
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
    err.data.setdefault("tool", tool.name)
    return ApplicationError(
        err.message,
        err.model_dump(mode="json"),
        {"key": key, "digest": request["digest"]},
        type=err.type,
        non_retryable=delay is None,
        # Temporal reads a zero delay as "none given": the smallest real one instead
        next_retry_delay=None if delay is None else timedelta(seconds=max(delay, 0.001)),
    )


__all__ = [
    "ACTIVITY",
    "PAYLOAD_LIMIT",
    "attempt_timeout",
    "call_args",
    "check_size",
    "make_activity",
]
