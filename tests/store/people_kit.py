"""Requests to people for the conformance tests: a review and an escalation of a run."""

from __future__ import annotations

from typing import Any

from keel.types import Escalation, EscalationPacket, ReviewRequest


def review(
    review_id: str,
    run_id: str,
    *,
    kind: str = "approval",
    queue: str = "payments",
    workflow: str = "wf",
    created_at: float = 1_000.0,
    deadline: float | None = None,
    request: dict[str, Any] | None = None,
) -> ReviewRequest:
    """A pending request for a person about `run_id`."""
    return ReviewRequest(
        id=review_id,
        kind=kind,
        run_id=run_id,
        workflow=workflow,
        step="refund#0",
        queue=queue,
        status="pending",
        request=request
        if request is not None
        else {"action": {"tool": "refund", "args": {"amount": 5}}, "reason": "irreversible"},
        deadline=deadline,
        created_at=created_at,
    )


def escalation(
    escalation_id: str, run_id: str, *, queue: str = "ops", created_at: float = 1_000.0, **kw: Any
) -> Escalation:
    """An open escalation of a failed tool step of `run_id`."""
    packet = EscalationPacket(
        workflow="wf", run_id=run_id, step="tool#0", reason="it failed for good", **kw
    )
    return Escalation(
        id=escalation_id,
        run_id=run_id,
        workflow="wf",
        queue=queue,
        kind="tool",
        step="tool#0",
        packet=packet,
        created_at=created_at,
    )
