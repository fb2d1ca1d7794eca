"""People's decisions as the Temporal update `keel.decide`: the workflow side and the sender.

A run on Temporal that asks a person (an approval, a gated tool, a low-confidence
review, a `Fallback.human` escalation) opens the request in Keel's store and then waits
for its decision. The decision arrives as an UPDATE, not a signal, because an update
has a validator: a decision the run cannot take (an edit that does not fit the tool's
parameters, a status the request does not know, a request the run is not waiting for)
is refused to whoever sent it, with the reason, and never enters history. An accepted
decision is in history, so a replay takes the same one.

Example (what `app.approvals.approve(...)` does for a run on Temporal):
    await deliver(app, run_id, "order-1:approval:refund#0", {"status": "approved", "by": "ada"})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from keel.errors import Conflict, InputError, SignalTimeout

if TYPE_CHECKING:
    from keel.engine.registry import ToolDef
    from keel.hitl.host import Host

DECIDE_UPDATE = "keel.decide"  # the update a decision travels as: {"id": ..., "decision": ...}

# What each kind of request may be decided as (as `app.approvals` / `app.escalations` do)
_STATUSES: dict[str, tuple[str, ...]] = {
    "approval": ("approved", "edited", "rejected"),
    "low_confidence": ("confirmed", "corrected", "rejected"),
    "novelty": ("approved", "rejected"),
    "escalation": ("resolved", "rejected"),
}


@dataclass(slots=True)
class _Open:
    kind: str
    check: Callable[[dict[str, Any]], list[str]]


class Decisions:
    """The requests one run waits on and the decisions that arrived for them.

    Lives on the workflow instance (`workflow.instance().decisions`), so the update's
    validator and handler reach it. A request is open from just before it is written to
    Keel's store until it is decided or its timeout policy gives up on it.

    Example:
        decisions.expect(review.id, "approval", check)
        decision = await decisions.wait(review.id, timeout=3600, summary=key)
    """

    def __init__(self) -> None:
        self._open: dict[str, _Open] = {}
        self._arrived: dict[str, dict[str, Any]] = {}

    def expect(self, target: str, kind: str, check: Callable[[dict[str, Any]], list[str]]) -> None:
        """Open `target` for a decision; `check` lists what is wrong with one."""
        if target not in self._arrived:
            self._open[target] = _Open(kind, check)

    def waiting_on(self) -> list[str]:
        """What the run waits for, named as on Keel's engine: `review:<id>` for an
        approval or review, `escalation:<id>` for an escalation."""
        return [
            f"{'escalation' if o.kind == 'escalation' else 'review'}:{target}"
            for target, o in self._open.items()
        ]

    def close(self, target: str) -> bool:
        """Stop taking decisions for `target`; False if one already arrived."""
        self._open.pop(target, None)
        return target not in self._arrived

    def validate(self, request: Any) -> None:
        """The update's validator: raise (refusing the update) for a decision this run
        cannot take. Runs before anything is written to history."""
        target, decision = _parts(request)
        waiting = self._open.get(target)
        if waiting is None:
            why = "already decided" if target in self._arrived else "not open"
            raise ApplicationError(
                f"run {_run_id()} is not waiting for a decision on {target!r} ({why}); "
                "a decision is final",
                type="Conflict",
                non_retryable=True,
            )
        status = decision.get("status")
        allowed = _STATUSES.get(waiting.kind, ())
        if status not in allowed:
            raise ApplicationError(
                f"{target} is a {waiting.kind} request: decide it as one of "
                f"{', '.join(allowed)}, not {status!r}",
                {"problems": [f"status: {status!r} is not one of {', '.join(allowed)}"]},
                type="InputError",
                non_retryable=True,
            )
        found = waiting.check(decision)
        if found:
            raise ApplicationError(
                f"the decision on {target} is invalid: {'; '.join(found)}",
                {"problems": found},
                type="InputError",
                non_retryable=True,
            )

    def take(self, request: Any) -> dict[str, Any]:
        """The update's handler: keep the (validated) decision for the waiting step."""
        target, decision = _parts(request)
        self._open.pop(target, None)
        self._arrived[target] = decision
        return {"id": target, "status": decision.get("status")}

    async def wait(self, target: str, timeout: float | None, summary: str) -> dict[str, Any]:
        """The decision on `target`; `keel.SignalTimeout` once `timeout` passes without one
        (the request stays open: the timeout policy decides what happens to it)."""
        try:
            await workflow.wait_condition(
                lambda: target in self._arrived, timeout=timeout, timeout_summary=summary
            )
        except TimeoutError:
            if target not in self._arrived:
                raise SignalTimeout(
                    f"no decision on {target} arrived within {timeout}s",
                    signal=target,
                    timeout=timeout,
                    step=summary,
                ) from None
        return self._arrived[target]


def _parts(request: Any) -> tuple[str, dict[str, Any]]:
    if (
        not isinstance(request, dict)
        or not isinstance(request.get("id"), str)
        or not isinstance(request.get("decision"), dict)
    ):
        raise ApplicationError(
            f"a {DECIDE_UPDATE} update carries {{'id': <request id>, 'decision': {{...}}}}, "
            f"got {request!r}",
            type="InputError",
            non_retryable=True,
        )
    return request["id"], request["decision"]


def _run_id() -> str:
    return workflow.info().workflow_id


def current() -> Decisions:
    """The decisions of the workflow running now."""
    found: Decisions = workflow.instance().decisions
    return found


# -- what a decision must fit (checked by the validator, in the workflow) ----------------


def review_check(
    kind: str, request: Mapping[str, Any], tools: Mapping[str, ToolDef]
) -> Callable[[dict[str, Any]], list[str]]:
    """What is wrong with a decision on a review of `kind` asking `request`."""
    from keel.hitl.schema_check import problems

    def check(decision: dict[str, Any]) -> list[str]:
        status = decision.get("status")
        if status == "edited":
            args = decision.get("args")
            if not isinstance(args, dict):
                return ["args: edited arguments are a JSON object of the tool's parameters"]
            found = problems(args, request.get("args_schema") or {})
            action = request.get("action")
            tool = tools.get(action.get("tool", "")) if isinstance(action, dict) else None
            if tool is not None and not found:
                found = _model_problems(tool.input_model(), args)
            return found
        if status == "corrected":
            return problems(decision.get("output"), request.get("schema") or {})
        if status == "rejected" and not str(decision.get("reason") or "").strip():
            return ["reason: a rejection needs a reason, so the run's record says why"]
        return []

    return check


def result_check(annotation: Any) -> Callable[[dict[str, Any]], list[str]]:
    """What is wrong with an escalation's resolution for a tool returning `annotation`."""
    from pydantic import ValidationError

    from keel.engine.serde import adapter, unannotated
    from keel.errors import validation_problems

    def check(decision: dict[str, Any]) -> list[str]:
        if decision.get("status") != "resolved" or annotation is unannotated():
            return []
        try:
            adapter(annotation).validate_python(decision.get("result"))
        except ValidationError as exc:
            return validation_problems(exc, "(result)")
        return []

    return check


def _model_problems(model: Any, value: dict[str, Any]) -> list[str]:
    from pydantic import ValidationError

    from keel.errors import validation_problems

    try:
        model.model_validate(value)
    except ValidationError as exc:
        return validation_problems(exc, "")
    return []


# -- the sender: Keel's deciders (API, CLI, console) reaching a run on Temporal ----------


async def deliver(app: Host, run_id: str, target: str, decision: dict[str, Any]) -> bool:
    """Send `decision` on request `target` to run `run_id` if Temporal executes it.

    False (nothing sent) for a run on Keel's engine. A decision the run refuses raises
    what Keel's engine raises for it: `keel.InputError` (invalid) or `keel.Conflict`
    (not waiting for it, already decided).
    """
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.exceptions import ApplicationError
    from temporalio.service import RPCError

    from keel.backends.temporal.mirror import on_temporal
    from keel.backends.temporal.remote import client_for

    run = await app.store.get_run(run_id)
    if run is None or not on_temporal(run):
        return False
    client = await client_for(app)  # type: ignore[arg-type]  # a Host is an App here
    handle = client.get_workflow_handle(run_id)
    try:
        await handle.execute_update(DECIDE_UPDATE, {"id": target, "decision": decision})
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError):
            details = cause.details[0] if cause.details else {}
            found = details.get("problems", []) if isinstance(details, dict) else []
            if cause.type == "InputError":
                raise InputError(cause.message, problems=found) from None
            raise Conflict(cause.message) from None
        raise Conflict(f"run {run_id} refused the decision on {target}: {exc}") from None
    except RPCError as exc:  # the run has ended (or Temporal is unreachable)
        raise Conflict(
            f"run {run_id} on Temporal could not take the decision on {target}: {exc.message}"
        ) from None
    return True


__all__ = ["DECIDE_UPDATE", "Decisions", "current", "deliver", "result_check", "review_check"]
