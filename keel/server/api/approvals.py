"""`/api/v1/approvals`: decisions that gate a run (approvals, low-confidence and novelty
reviews): list, read, approve, reject, edit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel

from keel.errors import RunNotFound
from keel.hitl.api import DECISION_KINDS, ReviewRequest
from keel.server.access import may_decide
from keel.server.api.base import Api, ApprovalKind, ApprovalStatus, Limit, Name, Note, Reason
from keel.server.auth import User
from keel.server.payloads import NO_RAW_EDIT, Payloads


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
        view: Payloads = Depends(api.view),
    ) -> dict[str, Any]:
        found = await app.approvals.list(queue, status, kind, limit)
        queues: dict[str, list[dict[str, Any]]] = {}
        for req in found:
            queues.setdefault(req.queue, []).append(view.request(req).summary())
        return {"queues": queues, "count": len(found)}

    @r.get("/{review_id:keel_id}")
    async def get_approval(
        review_id: str, user: User = Depends(api.user), view: Payloads = Depends(api.view)
    ) -> dict[str, Any]:
        req = await decision_request(review_id)
        return {
            **review(view.request(req)),
            "audit": view.audit(await app.approvals.audit(review_id)),
            "can_decide": req.status == "pending" and may_decide(user, req.queue, app.reviewers),
        }

    @r.post("/{review_id:keel_id}/approve")
    async def approve(
        review_id: str,
        body: Note,
        user: User = Depends(api.user),
        view: Payloads = Depends(api.view),
    ) -> dict[str, Any]:
        req = await decision_request(review_id)
        done = await api.decide(
            user,
            req.queue,
            req.status,
            f"{req.kind} {req.id}",
            lambda: app.approvals.approve(review_id, by=user.name, note=body.note),
        )
        return {**review(view.request(done)), **await api.notice(done.run_id)}

    @r.post("/{review_id:keel_id}/reject")
    async def reject(
        review_id: str,
        body: Reason,
        user: User = Depends(api.user),
        view: Payloads = Depends(api.view),
    ) -> dict[str, Any]:
        req = await decision_request(review_id)
        done = await api.decide(
            user,
            req.queue,
            req.status,
            f"{req.kind} {req.id}",
            lambda: app.approvals.reject(review_id, body.reason, by=user.name),
        )
        then = "continues with the rejection"
        return {**review(view.request(done)), **await api.notice(done.run_id, then)}

    @r.post("/{review_id:keel_id}/edit")
    async def edit(
        review_id: str,
        body: Edit,
        user: User = Depends(api.user),
        view: Payloads = Depends(api.view),
    ) -> dict[str, Any]:
        if not view.raw:  # edits start from the proposal, which this user sees masked
            raise HTTPException(403, NO_RAW_EDIT.format(user=user))
        req = await decision_request(review_id)
        done = await api.decide(
            user,
            req.queue,
            req.status,
            f"{req.kind} {req.id}",
            lambda: app.approvals.edit(review_id, body.args, by=user.name, note=body.note),
        )
        return {**review(view.request(done)), **await api.notice(done.run_id)}

    return r
