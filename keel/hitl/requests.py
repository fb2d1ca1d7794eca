"""The journaled human checkpoint: open a review, suspend durably, take the decision.

The run holds nothing while it waits. The deadline is a durable timer; when it
passes, the timeout policy applies (reject, fail, or escalate to another queue
with a new deadline). A decision is taken once; everything lands in the audit log.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from keel.engine.execution import Abandon
from keel.engine.journal import Scope
from keel.engine.serde import digest, unannotated
from keel.engine.waiting import wait_signal
from keel.errors import (
    ApprovalRejected,
    ApprovalTimedOut,
    ConfigError,
    LeaseLost,
    ReviewRejected,
    SignalTimeout,
    from_structured,
    structured,
)
from keel.hitl.policy import Escalate, TimeoutPolicy
from keel.store import StepWrite, UnitOfWork
from keel.types import ReviewRequest, StepKind, StepStatus

if TYPE_CHECKING:
    from keel.engine.context import Context


def signal_for(review_id: str) -> str:
    return f"review:{review_id}"


async def ask(
    ctx: Context,
    *,
    kind: str,
    name: str,
    request: dict[str, Any],
    queue: str,
    timeout: float | None,
    on_timeout: TimeoutPolicy = "reject",
) -> dict[str, Any]:
    """Ask a person; return their decision (`status`, `by`, `note`, ...) once it is in."""
    ex = ctx._exec
    scope = ctx._scope
    key, pos = scope.next(f"{kind}:{name}")
    review_id = f"{ex.run.id}:{key}"
    dg = digest(kind, name, queue, timeout)
    rec = ex.check(scope, key, pos, dg)
    if rec is not None and rec.status is not StepStatus.PENDING:
        out: dict[str, Any] = await ex.replayed(scope, rec, unannotated())
        return out
    now = time.time()
    started = rec.started_at if rec is not None else now
    if rec is None:
        deadline = now + timeout if timeout is not None else None
        pending = ex.record(
            scope,
            key,
            pos,
            StepKind.REVIEW,
            name,
            dg,
            now,
            status=StepStatus.PENDING,
            wake_at=deadline,
        )
        if scope.state is not None:
            pending.state_delta = scope.state.delta()
        review = {
            "id": review_id,
            "kind": kind,
            "run_id": ex.run.id,
            "workflow": ex.run.workflow,
            "step": key,
            "queue": queue,
            "request": request,
            "deadline": deadline,
        }
        try:
            req = ReviewRequest(**review, status="pending", created_at=now)
            uow = UnitOfWork(ex.run.id, ex.owner, [*ex._drain(), StepWrite(pending)], [req])
            created = review_id in (await ex.rt.store.commit(uow)).opened
        except LeaseLost:
            ex.lost = True
            raise Abandon() from None
        ex.journal.add(pending)
        ex.recorded(pending)
        if created and ex.rt.hooks.active:
            ex.rt.hooks.review_requested({**review, "status": "pending", "created_at": now})
    sub = Scope(path=f"{key}/", state=None)
    level, wait, policy = 0, timeout, on_timeout
    while True:
        try:
            decision: dict[str, Any] = await wait_signal(
                ex, sub, f"{key}/decision#{level}", level, signal_for(review_id), wait
            )
            break
        except SignalTimeout:
            level += 1
            now = time.time()
            store = ex.rt.store
            if isinstance(policy, Escalate):
                if f"{key}/decision#{level}" in ex.journal.by_key:  # replay: it moved before
                    wait, policy = policy.timeout, policy.then
                    continue
                new_deadline = now + policy.timeout if policy.timeout is not None else None
                if await store.requeue_review(review_id, policy.queue, new_deadline, now):
                    wait, policy = policy.timeout, policy.then
                else:  # decided just as the deadline passed: take that decision
                    wait = None
                continue
            try:
                await store.decide_review(
                    review_id, "expired", {"policy": policy}, "keel", now, None
                )
            except ConfigError:
                current = await store.get_review(review_id)
                if current is None or current.status != "expired":
                    wait = None  # a person decided just as the deadline passed: take that
                    continue
                # expired by an earlier execution that died before journaling the failure
            rejected = ApprovalRejected if kind == "approval" else ReviewRejected
            cls = ApprovalTimedOut if policy == "fail" else rejected
            err = structured(
                cls(
                    f"{kind} {review_id} got no decision before its deadline (queue {queue}); "
                    f"timeout policy: {policy}",
                    review=review_id,
                    policy=policy,
                    step=key,
                ),
                step=key,
            )
            failed = ex.record(
                scope,
                key,
                pos,
                StepKind.REVIEW,
                name,
                dg,
                started,
                status=StepStatus.ERROR,
                error=err,
            )
            await ex.commit(scope, failed, None)
            exc = from_structured(err)
            if policy == "fail":
                ex.fatal = exc
            raise exc from None
    done = ex.record(scope, key, pos, StepKind.REVIEW, name, dg, started)
    if rec is None:  # it replaces the pending entry this execution wrote: keep its changes
        done.state_delta = pending.state_delta
    await ex.commit(scope, done, _json(decision))
    return decision


def _json(value: Any) -> bytes:
    import pydantic_core

    return pydantic_core.to_json(value)
