"""`/api/v1/approvals`: decisions that gate a run (approvals, low-confidence and novelty
reviews): list, read, approve, reject, edit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from keel.errors import RunNotFound
from keel.hitl.api import DECISION_KINDS, ReviewRequest
from keel.server.api.base import Api, ApprovalKind, ApprovalStatus, Limit, Name, Note, Reason
from keel.server.auth import User


class Edit(BaseModel):
    args: dict[str, Any]
    note: str | None = None


def review(req: ReviewRequest) -> dict[str, Any]:
    """A request as the API shows it: its summary, step, request and decision time."""
    return {**req.summary(), "step": req.step, "request": req.request, "decided_at": req.decided_at}


def router(api: Api) -> APIRouter:
    r = api.router("/approvals")
    app = api.app

    async def decision_request(review_id: str) -> ReviewRequest:
        req: ReviewRequest = await app.approvals.get(review_id)
        if req.kind not in DECISION_KINDS:
            raise RunNotFound(f"no approval {review_id!r}; it is a {req.kind} review")
        return req

    @r.get("")
    async def list_approvals(
        queue: Name | None = None,
        status: ApprovalStatus = "pending",
        kind: ApprovalKind | None = None,
        limit: Limit = 100,
        user: User = Depends(api.user),
    ) -> dict[str, Any]:
        found = await app.approvals.list(queue, status, kind, limit)
        queues: dict[str, list[dict[str, Any]]] = {}
        for req in found:
            queues.setdefault(req.queue, []).append(req.summary())
        return {"queues": queues, "count": len(found)}

    @r.get("/{review_id:keel_id}")
    async def get_approval(review_id: str, user: User = Depends(api.user)) -> dict[str, Any]:
        req = await decision_request(review_id)
        return {
            **review(req),
            "audit": await app.approvals.audit(review_id),
            "can_decide": req.status == "pending" and user.may_decide(req.queue),
        }

    @r.post("/{review_id:keel_id}/approve")
    async def approve(
        review_id: str, body: Note, user: User = Depends(api.user)
    ) -> dict[str, Any]:
        req = await decision_request(review_id)
        done = await api.decide(
            user, req.queue, req.status, f"{req.kind} {req.id}",
            lambda: app.approvals.approve(review_id, by=user.name, note=body.note),
        )
        return {**review(done), **await api.notice(done.run_id)}

    @r.post("/{review_id:keel_id}/reject")
    async def reject(
        review_id: str, body: Reason, user: User = Depends(api.user)
    ) -> dict[str, Any]:
        req = await decision_request(review_id)
        done = await api.decide(
            user, req.queue, req.status, f"{req.kind} {req.id}",
            lambda: app.approvals.reject(review_id, body.reason, by=user.name),
        )
        return {**review(done), **await api.notice(done.run_id, "continues with the rejection")}

    @r.post("/{review_id:keel_id}/edit")
    async def edit(review_id: str, body: Edit, user: User = Depends(api.user)) -> dict[str, Any]:
        req = await decision_request(review_id)
        done = await api.decide(
            user, req.queue, req.status, f"{req.kind} {req.id}",
            lambda: app.approvals.edit(review_id, body.args, by=user.name, note=body.note),
        )
        return {**review(done), **await api.notice(done.run_id)}

    return r
