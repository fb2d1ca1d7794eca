"""Approvals in a workflow: `ctx.approval(...)` and the gate in front of irreversible tools."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from keel.errors import ApprovalRejected, ConfigError, ReviewRejected
from keel.hitl.policy import Approval, TimeoutPolicy
from keel.hitl.requests import ask

if TYPE_CHECKING:
    from keel.engine.context import Context
    from keel.engine.registry import ToolDef
    from keel.hitl.host import Host
    from keel.store.base import Store


class Decision(BaseModel):
    """A person's decision on an approval request."""

    status: str  # approved / edited
    by: str
    note: str | None = None
    args: dict[str, Any] | None = None  # the approved arguments (edited ones when edited)

    @property
    def edited(self) -> bool:
        return self.status == "edited"


def _rejected(what: str, decision: dict[str, Any]) -> ApprovalRejected:
    reason = decision.get("reason") or decision.get("note") or "no reason given"
    return ApprovalRejected(
        f"{what} was rejected by {decision.get('by', 'someone')}: {reason}",
        by=decision.get("by"),
        reason=reason,
    )


class Checkpoints:
    """keel.hitl as the engine's `People` feature: approvals, gated tools, output reviews.

    Example (what keel/features.py does):
        rt.features.people = Checkpoints(app)
    """

    def __init__(self, host: Host) -> None:
        self._host = host

    async def approval(
        self,
        ctx: Context,
        action: str | dict[str, Any],
        *,
        context: Any = None,
        reason: str | None = None,
        queue: str = "approvals",
        timeout: float | None = None,
        on_timeout: TimeoutPolicy = "reject",
    ) -> Decision:
        """`ctx.approval(...)`: see `approval`."""
        return await approval(
            ctx,
            self._host.store,
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
        """The gate in front of a tool that needs approval: see `approve_call`."""
        return await approve_call(ctx, self._host.store, tool, args, kwargs)

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
        """A low-confidence output to a person: see `review_output`."""
        return await review_output(
            ctx,
            self._host.store,
            schema=schema,
            output=output,
            score=score,
            threshold=threshold,
            prompt=prompt,
            queue=queue,
            timeout=timeout,
        )


async def approval(
    ctx: Context,
    store: Store,
    action: str | dict[str, Any],
    *,
    context: Any = None,
    reason: str | None = None,
    queue: str = "approvals",
    timeout: float | None = None,
    on_timeout: TimeoutPolicy = "reject",
    name: str | None = None,
) -> Decision:
    """Suspend until a person approves `action`; raises ApprovalRejected if they reject it."""
    label = name or (action if isinstance(action, str) else str(action.get("name", "action")))
    request = {
        "action": action,
        "context": _jsonable(context),
        "reason": reason or "the workflow asked for approval",
        "incoming": ctx.input,
    }
    decision = await ask(
        ctx,
        store,
        kind="approval",
        name=label,
        request=request,
        queue=queue,
        timeout=timeout,
        on_timeout=on_timeout,
    )
    if decision.get("status") == "rejected":
        raise _rejected(f"action {label!r}", decision)
    return Decision.model_validate(decision)


async def approve_call(
    ctx: Context, store: Store, tool: ToolDef, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The gate in front of an irreversible tool: its arguments once a person approved them."""
    policy = tool.approval if isinstance(tool.approval, Approval) else Approval()
    bound = inspect.signature(tool.fn).bind(*args, **kwargs)
    named = dict(bound.arguments)
    if not policy.applies(named):
        return args, kwargs
    try:
        state = ctx.state
    except ConfigError:  # a workflow without typed state
        state = None
    context = policy_context(policy, state)
    request = {
        "action": {"tool": tool.name, "args": _jsonable(named)},
        "args_schema": tool.input_model().model_json_schema(),
        "context": context,
        "reason": policy.reason or f"{tool.name} is irreversible: a person must approve it",
        "incoming": ctx.input,
    }
    decision = await ask(
        ctx,
        store,
        kind="approval",
        name=tool.name,
        request=request,
        queue=policy.queue,
        timeout=policy.timeout,
        on_timeout=policy.on_timeout,
    )
    status = decision.get("status")
    if status == "rejected":
        raise _rejected(f"call of {tool.name!r}", decision)
    if status == "edited":
        try:
            edited = tool.input_model().model_validate(decision.get("args") or {})
        except ValidationError as exc:  # validated on decision; this guards older clients
            raise ApprovalRejected(
                f"the edited arguments for {tool.name!r} are invalid: {exc.errors()[0]['msg']}"
            ) from None
        return (), {k: getattr(edited, k) for k in type(edited).model_fields}
    return args, kwargs


def policy_context(policy: Approval, state: Any) -> Any:
    if policy.context is None:
        return None
    return _jsonable(policy.context(state))


def _jsonable(value: Any) -> Any:
    import pydantic_core

    try:
        return pydantic_core.from_json(pydantic_core.to_json(value))
    except Exception:
        return repr(value)


def novelty_gate(fn: Any, detector: Any, host: Host) -> Any:
    """Wrap a workflow so a novel input goes to review before any of its steps run."""

    @functools.wraps(fn)
    async def guarded(ctx: Context, **inputs: Any) -> Any:
        await check_novelty(ctx, host.store, detector, inputs)
        return await fn(ctx, **inputs)

    return guarded


async def check_novelty(ctx: Context, store: Store, detector: Any, inputs: dict[str, Any]) -> None:
    plain = _jsonable(inputs)
    text = detector.text(plain)

    async def score() -> dict[str, Any]:
        value, novel = await detector.score(text)
        return {"score": value, "threshold": detector.threshold, "novel": novel}

    verdict = await ctx.operation("novelty", text).run(score, dict)
    if not verdict["novel"]:
        return
    decision = await ask(
        ctx,
        store,
        kind="novelty",
        name="input",
        request={
            "input": plain,
            "score": verdict["score"],
            "threshold": verdict["threshold"],
            "reason": f"the input scored {verdict['score']:.3f} against a novelty "
            f"threshold of {verdict['threshold']:.3f}: unlike anything seen",
        },
        queue=detector.queue,
        timeout=None,  # no deadline, so `store` is never written from here: the same code
        # runs inside a Temporal workflow, where only activities may touch a store
    )
    if decision.get("status") == "rejected":
        reason = decision.get("reason") or "no reason given"
        raise ReviewRejected(f"novel input rejected by {decision.get('by')}: {reason}")


async def review_output(
    ctx: Context,
    store: Store,
    *,
    schema: type[BaseModel],
    output: dict[str, Any],
    score: float,
    threshold: float,
    prompt: Any,
    queue: str,
    timeout: float | None,
) -> BaseModel:
    """A low-confidence output goes to a person, who confirms it or supplies the right one."""
    decision = await ask(
        ctx,
        store,
        kind="low_confidence",
        name=schema.__name__,
        request={
            "output": output,
            "score": score,
            "threshold": threshold,
            "schema": schema.model_json_schema(),
            "prompt": prompt,
            "reason": f"confidence {score:.3f} is below the required {threshold}",
        },
        queue=queue,
        timeout=timeout,
    )
    status = decision.get("status")
    if status == "rejected":
        reason = decision.get("reason") or "no reason given"
        raise ReviewRejected(f"{schema.__name__} output rejected by {decision.get('by')}: {reason}")
    if status == "corrected":
        return schema.model_validate(decision.get("output"))
    return schema.model_validate(output)
