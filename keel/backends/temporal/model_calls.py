"""Model calls on Temporal: the activity `keel.llm`, a regular activity.

`ctx.llm` journals every model call as an operation whose policy carries the call as
data (messages, model, params, cache, the fitted context). On Temporal that request
travels to an activity worker, which sends it through the App's own Gateway (routing,
budgets, cache, fallback models, metering) exactly as Keel's engine does in process;
so model calls can be scaled, rate-limited and retried apart from the workflow worker,
as tools are. Keel's `Retry` of the gateway decides whether and when to try again (full
jitter, Retry-After, deadline). A `Retry(budget=N)` is counted by the workflow across
the run under the step's name (`llm:<name>`, as Keel's engine counts it): each attempt
is then an activity of its own, the request carrying its attempt number and the budget
left (keel.backends.temporal.attempts), and a retried attempt is written PENDING.

Example (what the Temporal port schedules for `await ctx.llm.text("hi")`):
    await workflow.execute_activity(MODEL_ACTIVITY, request, ...)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from keel.backends.temporal.activity import attempt_of, failure, first_attempt_at, retried
from keel.backends.temporal.mirror import Entry, record, running
from keel.engine.control import CURRENT_STEP, StepInfo
from keel.engine.serde import from_json, to_json
from keel.errors import ConfigError, SerializationError
from keel.store import Usage
from keel.types import StepKind, StructuredError

if TYPE_CHECKING:
    from keel.app import App

MODEL_ACTIVITY = "keel.llm"


def portable(request: dict[str, Any]) -> Any:
    """`request` as JSON, or None when it cannot travel (then the call runs in the
    workflow's worker, as a local activity)."""
    try:
        return from_json(to_json(request, what="a model call"))
    except SerializationError:
        return None


def make_model_activity(app: App) -> Callable[..., Any]:
    """The `keel.llm` activity: one model call through `app`'s Gateway."""
    from temporalio import activity

    from keel.llm.gateway import CallContext

    @activity.defn(name=MODEL_ACTIVITY)  # `request` typed Any: as keel.call's (activity.py)
    async def keel_llm(request: Any) -> dict[str, Any]:
        info = activity.info()
        gateway = app.gateway
        attempt = attempt_of(request, info)
        token = CURRENT_STEP.set(StepInfo(info.workflow_id or "", request["key"], attempt, ()))
        held: list[Any] = []
        try:
            with running():  # (its entry may then share a transaction with others')
                return await _call(request, info, attempt, gateway, held)
        finally:
            CURRENT_STEP.reset(token)
            for h in held:  # stored (or failed): stop counting it as in flight
                gateway.release(h)

    async def _call(
        request: dict[str, Any], info: Any, attempt: int, gateway: Any, held: list[Any]
    ) -> dict[str, Any]:
        call, key = request["llm"], request["key"]
        run_id = info.workflow_id or ""
        try:
            if gateway is None:
                raise ConfigError(
                    "the Temporal worker's App has no model configured: pass "
                    "keel.App(llm=...) or set KEEL_MODEL where the worker runs"
                )
            cc = CallContext(**call["call"], tenant=call["tenant"], store=app.store)
            resp = await gateway.complete(
                call["messages"],
                cc,
                model=call["model"],
                params=call["params"],
                cache=call["cache"],
                held=held,
            )
            resp.context = call["context"]
            data = to_json(resp, what=f"step {key!r}")
        except Exception as exc:
            retry = gateway.retry if gateway is not None else None
            first = first_attempt_at(request, info)
            fail = failure(request["name"], retry, request, attempt, first, exc)
            again = retried(fail)
            if not again or "attempt" in request:
                # its last attempt: the failure (a spent budget's included) is its outcome;
                # a retry the workflow schedules shows as PENDING, as on Keel's engine
                err = StructuredError.model_validate(fail.details[0])
                entry = _entry(run_id, request, attempt, None, err, None)
                await record(app.store, replace(entry, pending=again))
            raise fail from exc
        usage = Usage(
            resp.model,
            resp.usage.input_tokens,
            resp.usage.output_tokens,
            resp.cost_usd,
            resp.cache_hit,
        )
        await record(app.store, _entry(run_id, request, attempt, data, None, usage))
        return {
            "key": key,
            "digest": request["digest"],
            "output": from_json(data),
            "attempts": attempt,
        }

    return keel_llm


def _entry(
    run_id: str,
    request: dict[str, Any],
    attempts: int,
    data: bytes | None,
    err: Any,
    usage: Usage | None,
) -> Entry:
    return Entry(
        run_id=run_id,
        key=request["key"],
        scope=request["scope"],
        position=request["pos"],
        kind=StepKind.LLM,
        name=request["name"],
        digest=request["digest"],
        started=float(request["started"]),
        attempts=attempts,
        data=data,
        error=err,
        usage=usage,
    )


__all__ = ["MODEL_ACTIVITY", "make_model_activity", "portable"]
