"""People on Temporal: approvals, gated tools, output and novelty reviews, and
`Fallback.human` (a tool's, or a `ctx.operation(...)` effect's of one's own).

The same `keel.hitl` code as on Keel's engine decides what to ask and what a decision
means (`keel.hitl.gate`, `keel.hitl.requests.ask`); only the durable parts differ:

- the request (a `ReviewRequest` or an `Escalation`, with the ids Keel's engine gives
  them) is written to Keel's store by the local activity `keel.people`, idempotent on
  its id, so `keel approvals`, `keel escalations` and the console list it, and the App's
  hooks (the notifier, metrics) hear of it once;
- the run then waits for the decision as the update `keel.decide`
  (keel.backends.temporal.decisions), whose validator refuses a decision it cannot take;
- a timeout is a workflow timer; what the timeout policy does to the request in the
  store (expire it, move it to another queue) is again a `keel.people` local activity.

Example (what `features_for` plugs in):
    Features(people=TemporalPeople(), ...)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from keel.backends.temporal.decisions import current, result_check
from keel.backends.temporal.mirror import Entry, record
from keel.engine.recovery import escalation_reason, result_schema, summarise
from keel.engine.serde import from_json, revive, to_json
from keel.errors import (
    Conflict,
    EscalationRejected,
    SerializationError,
    ValidationFailed,
    from_structured,
    structured,
)
from keel.types import Escalation, EscalationPacket, ReviewRequest, StepKind

if TYPE_CHECKING:
    from pydantic import BaseModel

    from keel.app import App
    from keel.backends.temporal.operation import TemporalOperation
    from keel.engine.context import Context
    from keel.engine.journal import Scope
    from keel.engine.recovery import StepPolicy
    from keel.engine.registry import ToolDef
    from keel.policy.fallback import Fallback
    from keel.store import Store
    from keel.types import StructuredError

PEOPLE_ACTIVITY = "keel.people"
_UNDECIDED = {"decision", "decided_at", "decided_by"}


async def act(request: dict[str, Any], summary: str) -> Any:
    """Run one store operation of `keel.people` (a local activity, recorded in history).
    Retried until the store takes it: a request nobody can see would wait forever."""
    from temporalio import workflow
    from temporalio.common import RetryPolicy

    return await workflow.execute_local_activity(
        PEOPLE_ACTIVITY,
        request,
        start_to_close_timeout=timedelta(minutes=1),
        retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
        summary=summary,
    )


class _WorkflowStore:
    """What `keel.hitl.requests.ask` does to a review in the store when its deadline
    passes, as `keel.people` local activities (workflow code cannot touch a store)."""

    async def requeue_review(
        self, review_id: str, queue: str, deadline: float | None, now: float
    ) -> bool:
        done = await act(
            {"op": "requeue", "id": review_id, "queue": queue, "deadline": deadline, "now": now},
            f"requeue {review_id}",
        )
        return bool(done["moved"])

    async def decide_review(
        self,
        review_id: str,
        status: str,
        decision: dict[str, Any],
        by: str,
        now: float,
        signal: str | None,
    ) -> ReviewRequest:
        if not current().close(review_id):  # a person's decision got in first: take it
            raise Conflict(f"review {review_id} was decided as its deadline passed")
        done = await act(
            {
                "op": "decide",
                "id": review_id,
                "status": status,
                "decision": decision,
                "by": by,
                "now": now,
            },
            f"{status} {review_id}",
        )
        if done.get("conflict"):
            raise Conflict(done["conflict"])
        return ReviewRequest.model_validate(done["review"])

    async def get_review(self, review_id: str) -> ReviewRequest | None:
        done = await act({"op": "get", "id": review_id}, f"read {review_id}")
        found = done.get("review")
        return None if found is None else ReviewRequest.model_validate(found)


_STORE = cast("Store", _WorkflowStore())


class TemporalPeople:
    """The `People` feature of a run on Temporal: keel.hitl's gate over Temporal.

    Example:
        features = Features(people=TemporalPeople(), models=..., memory=..., session=...)
    """

    async def approval(
        self,
        ctx: Context,
        action: str | dict[str, Any],
        *,
        context: Any = None,
        reason: str | None = None,
        queue: str = "approvals",
        timeout: float | None = None,
        on_timeout: Any = "reject",
    ) -> Any:
        from keel.hitl.gate import approval

        return await approval(
            ctx,
            _STORE,
            action,
            context=context,
            reason=reason,
            queue=queue,
            timeout=timeout,
            on_timeout=on_timeout,
        )

    async def approve_call(
        self, ctx: Context, tool: ToolDef, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        from keel.hitl.gate import approve_call

        return await approve_call(ctx, _STORE, tool, args, kwargs)

    async def review_output(
        self,
        ctx: Context,
        *,
        schema: type[BaseModel],
        output: dict[str, Any],
        score: float,
        threshold: float,
        prompt: Any,
        queue: str,
        timeout: float | None,
    ) -> BaseModel:
        from keel.hitl.gate import review_output

        return await review_output(
            ctx,
            _STORE,
            schema=schema,
            output=output,
            score=score,
            threshold=threshold,
            prompt=prompt,
            queue=queue,
            timeout=timeout,
        )


# -- Fallback.human: a tool or an own operation that failed for good, resolved by a person


async def await_person(
    run: Any,
    scope: Scope,
    tool: ToolDef,
    request: dict[str, Any],
    err: StructuredError,
    annotation: Any,
) -> Any:
    """Escalate the failed call `request` of `tool` (queue from its `Fallback.human`)
    and wait for a person: their result is the step's, or the step fails with
    `keel.EscalationRejected` (or `keel.ValidationFailed` for a result that does not fit)."""
    step = _Failed(run.id, run.workflow, scope, tool.name, StepKind.TOOL, request, request["args"])
    return await _escalate(step, tool.fallback, err, annotation)


async def escalate_operation(
    op: TemporalOperation, policy: StepPolicy, err: StructuredError, annotation: Any
) -> Any:
    """`Fallback.human` on a `ctx.operation(...)` effect of one's own that failed for
    good: escalated, decided and journaled as a tool's is (Keel's engine does the same
    for both). An error no person can fix (it cannot be serialised, a config error) is
    raised as it is.

    Example (what `TemporalOperation.run` does once the effect failed for good):
        return await escalate_operation(op, policy, err, int)
    """
    if err.type in ("SerializationError", "ConfigError"):
        raise from_structured(err)
    request = {"key": op.key, "pos": op.pos, "digest": op.digest}
    given = _plain(policy.input)
    step = _Failed(op.run_id, op.workflow, op.scope, op.name, op.kind, request, given)
    return await _escalate(step, policy.fallback, err, annotation)


def _plain(value: Any) -> Any:
    """`value` as JSON for an escalation packet (its repr if it is not JSON)."""
    try:
        return from_json(to_json(value, what="input"))
    except SerializationError:
        return repr(value)[:2000]


@dataclass(frozen=True, slots=True)
class _Failed:
    """The step that failed for good, as its escalation describes it: the run, where
    the step is, its name and kind, its request (`key`, `pos`, `digest`) and its input.

    Example:
        _Failed(run.id, run.workflow, scope, "lookup_account", StepKind.TOOL, request, args)
    """

    run_id: str
    workflow: str
    scope: Scope
    name: str
    kind: StepKind
    request: dict[str, Any]
    input: Any


async def _escalate(
    step: _Failed, fb: Fallback | None, err: StructuredError, annotation: Any
) -> Any:
    """Escalate `step` (queue from its `Fallback.human`) and wait for a person, as Keel's
    engine does: the escalation `<run>:<key>` of kind `tool` with its packet, the decision
    as `keel.decide`; their result is the step's, or the step fails with
    `keel.EscalationRejected` (`keel.ValidationFailed` for a result that does not fit).

    Example:
        account = await _escalate(step, tool.fallback, err, Profile)
    """
    from temporalio import workflow

    scope, name, request = step.scope, step.name, step.request
    key, pos = request["key"], request["pos"]
    err.fallback = "human"
    attempts = err.attempts or 1
    esc_id = f"{step.run_id}:{key}"
    state = scope.state
    escalation = Escalation(
        id=esc_id,
        run_id=step.run_id,
        workflow=step.workflow,
        queue=fb.queue if fb is not None and fb.queue else "escalations",
        kind="tool",
        step=key,
        packet=EscalationPacket(
            workflow=step.workflow,
            run_id=step.run_id,
            step=key,
            phase=scope.phase,
            tool=name,
            input=step.input,
            output=err.data.get("output"),
            reason=escalation_reason(name, err, attempts),
            error=err,
            messages=list(err.data.get("messages", [])),
            state=state.snapshot() if state is not None else None,
            result_schema=result_schema(annotation),
        ),
        created_at=workflow.now().timestamp(),
    )
    entry: dict[str, Any] = {
        "run_id": step.run_id,
        "key": key,
        "scope": scope.path,
        "pos": pos,
        "kind": step.kind.value,
        "name": name,
        "digest": request["digest"],
        "started": escalation.created_at,
        "attempts": attempts,
        "fallback": "human",
    }
    decisions = current()
    decisions.expect(esc_id, "escalation", result_check(annotation))
    waiting = {**entry, "error": err.model_dump(mode="json"), "pending": True}
    opened = {"op": "escalate", "escalation": escalation.model_dump(mode="json")}
    await act({**opened, "prefix": scope.phase_prefix or "", "entry": waiting}, key)
    decision = await decisions.wait(esc_id, None, f"{key}/resolution")
    by = decision.get("by", "someone")
    settle = {"op": "settle", "id": esc_id, "kind": "escalation", "decision": decision}
    rejection: Exception
    if decision.get("status") == "resolved":
        try:
            value = revive(decision.get("result"), annotation)
        except Exception as exc:  # refused by the validator; this guards older histories
            rejection = ValidationFailed(
                f"escalation {esc_id} was resolved by {by} with a result that does not fit "
                f"tool {name!r}'s return type: {exc}",
                messages=[str(exc)],
                step=key,
            )
        else:
            data = to_json(value, what=f"resolution of {esc_id}")
            ok = {**entry, "output": from_json(data), "error": err.model_dump(mode="json")}
            await act({**settle, "entry": ok}, f"{key}/resolution")
            return revive(from_json(data), annotation)
    else:
        note = decision.get("reason") or decision.get("note") or "no reason given"
        rejection = EscalationRejected(
            f"escalation {esc_id} (tool {name!r}) was rejected by {by}: {note}",
            escalation=esc_id,
            by=by,
            step=key,
        )
    failed = structured(rejection, step=key, attempts=attempts)
    failed.fallback = "human"
    failed.cause = err
    await act({**settle, "entry": {**entry, "error": failed.model_dump(mode="json")}}, key)
    raise from_structured(failed)


# -- the `keel.people` local activity: Keel's store, from the worker ----------------------


def make_people_activity(app: App) -> Any:
    """The `keel.people` local activity: opens, moves, expires and settles requests."""
    from temporalio import activity

    @activity.defn(name=PEOPLE_ACTIVITY)
    async def keel_people(request: dict[str, Any]) -> dict[str, Any]:
        return await _people_op(app, request)

    return keel_people


async def _people_op(app: App, request: dict[str, Any]) -> dict[str, Any]:
    from keel.store import UnitOfWork

    store, hooks, op = app.store, app.hooks, request["op"]
    if op == "review":
        review = ReviewRequest.model_validate(request["review"])
        await record(store, _entry(request["entry"]))  # PENDING, listed with the request
        done = await store.commit(UnitOfWork(review.run_id, None, reviews=[review]))
        if review.id in done.opened and hooks.active:
            hooks.review_requested(review.model_dump(exclude=_UNDECIDED))
        return {"opened": review.id in done.opened}
    if op == "escalate":
        esc = Escalation.model_validate(request["escalation"])
        # what the run did so far, as on Keel's engine: from the entries its activities wrote
        steps = await store.load_steps(esc.run_id)
        esc.packet.journal = summarise(steps, request.get("prefix") or "")
        # the step waits for a person, as Keel's engine shows it: on record before the
        # escalation is listed (a retry writes the same entry again)
        await record(store, _entry(request["entry"]))
        done = await store.commit(UnitOfWork(esc.run_id, None, escalations=[esc]))
        if esc.id in done.opened and hooks.active:
            hooks.escalated(esc.run_id, esc.id, esc.queue)
        return {"opened": esc.id in done.opened}
    if op == "requeue":
        moved = await store.requeue_review(
            request["id"], request["queue"], request["deadline"], request["now"]
        )
        return {"moved": moved}
    if op == "decide":
        try:
            decided = await store.decide_review(
                request["id"],
                request["status"],
                request["decision"],
                request["by"],
                request["now"],
                None,
            )
        except Conflict as exc:
            return {"conflict": exc.message}
        return {"review": decided.model_dump(mode="json")}
    if op == "get":
        found = await store.get_review(request["id"])
        return {"review": None if found is None else found.model_dump(mode="json")}
    if op == "record":
        await record(store, _entry(request["entry"]))
        return {}
    if op == "settle":
        await _settle(app, request)
        return {}
    raise ValueError(f"unknown keel.people operation {op!r}")


async def _settle(app: App, request: dict[str, Any]) -> None:
    """The decision a run took, in Keel's store: the request decided (if the decider
    did not record it yet: it normally has) and the step's journal entry."""
    from keel.errors import RunNotFound

    decision = dict(request["decision"])
    status, by = decision.pop("status", "decided"), decision.pop("by", "anonymous")
    try:
        if request["kind"] == "escalation":
            await app.store.resolve_escalation(request["id"], status, decision, by, time.time())
        else:
            await app.store.decide_review(request["id"], status, decision, by, time.time(), None)
    except (Conflict, RunNotFound):
        pass  # the decider recorded it first, as it normally does
    e = request.get("entry")
    if e is not None:
        await record(app.store, _entry(e))


def _entry(e: dict[str, Any]) -> Entry:
    """A journal entry the workflow described (JSON) for Keel's store."""
    return Entry(
        run_id=e["run_id"],
        key=e["key"],
        scope=e["scope"],
        position=e["pos"],
        kind=StepKind(e["kind"]),
        name=e["name"],
        digest=e["digest"],
        started=e["started"],
        attempts=e["attempts"],
        data=to_json(e["output"], what=f"step {e['key']!r}") if "output" in e else None,
        error=_error(e.get("error")),
        fallback=e.get("fallback"),
        pending=bool(e.get("pending")),
    )


def _error(raw: Any) -> StructuredError | None:
    from keel.types import StructuredError

    return None if raw is None else StructuredError.model_validate(raw)


__all__ = [
    "PEOPLE_ACTIVITY",
    "TemporalPeople",
    "await_person",
    "escalate_operation",
    "make_people_activity",
]
