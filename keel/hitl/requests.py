"""The journaled human checkpoint: open a review, suspend durably, take the decision.

The run holds nothing while it waits. The deadline is a durable timer; when it
passes, the timeout policy applies (reject, fail, or escalate to another queue
with a new deadline). A decision is taken once; everything lands in the audit log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.errors import (
    ApprovalRejected,
    ApprovalTimedOut,
    ConfigError,
    ReviewRejected,
    SignalTimeout,
)
from keel.hitl.policy import Escalate, TimeoutPolicy
from keel.types import ReviewRequest, StepKind

if TYPE_CHECKING:
    from keel.engine.context import Context
    from keel.store.base import Store


def signal_for(review_id: str) -> str:
    return f"review:{review_id}"


async def ask(
    ctx: Context,
    store: Store,
    *,
    kind: str,
    name: str,
    request: dict[str, Any],
    queue: str,
    timeout: float | None,
    on_timeout: TimeoutPolicy = "reject",
) -> dict[str, Any]:
    """Ask a person; return their decision (`status`, `by`, `note`, ...) once it is in.

    One durable operation: its PENDING entry and the review land together; the
    decision is a signal waited for under it; a deadline applies the timeout policy.
    `store` is where the timeout policy moves or expires the review.
    """
    op = ctx.operation(
        name, kind, name, queue, timeout, kind=StepKind.REVIEW, key_name=f"{kind}:{name}"
    )
    if op.done:
        out: dict[str, Any] = await op.replay()
        return out
    key = op.key
    review_id = f"{op.run_id}:{key}"
    if not op.begun:
        now = op.clock()
        deadline = now + timeout if timeout is not None else None
        review = ReviewRequest(
            id=review_id,
            kind=kind,
            run_id=op.run_id,
            workflow=op.workflow,
            step=key,
            queue=queue,
            status="pending",
            request=request,
            deadline=deadline,
            created_at=now,
        )
        await op.begin(wake_at=deadline, review=review)
    level, wait, policy = 0, timeout, on_timeout
    while True:
        try:
            decision: dict[str, Any] = await op.wait(
                signal_for(review_id), f"decision#{level}", level, wait
            )
            break
        except SignalTimeout:
            level += 1
            now = op.clock()
            if isinstance(policy, Escalate):
                if op.has(f"decision#{level}"):  # replay: it moved before
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
            await op.fail(
                cls(
                    f"{kind} {review_id} got no decision before its deadline (queue {queue}); "
                    f"timeout policy: {policy}",
                    review=review_id,
                    policy=policy,
                    step=key,
                ),
                fatal=policy == "fail",
            )
    await op.finish(decision)
    return decision
