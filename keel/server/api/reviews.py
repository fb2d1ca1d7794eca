"""`/api/v1/reviews`: completed runs sampled for a person's verdict."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from keel.errors import RunNotFound
from keel.hitl.api import ReviewRequest
from keel.server.api.approvals import review
from keel.server.api.base import Api, Limit, Name, ReviewStatus
from keel.server.auth import User
from keel.server.payloads import Payloads


class Verdict(BaseModel):
    correct: bool
    label: Any = None
    note: str | None = None


def router(api: Api) -> APIRouter:
    r = api.router("/reviews")
    app = api.app

    async def sample(review_id: str) -> ReviewRequest:
        req: ReviewRequest = await app.reviews.get(review_id)
        if req.kind != "sample":
            raise RunNotFound(f"no sampled review {review_id!r}; it is a {req.kind} request")
        return req

    @r.get("")
    async def list_reviews(
        status: ReviewStatus = "pending",
        workflow: Name | None = None,
        limit: Limit = 100,
        view: Payloads = Depends(api.view),
    ) -> list[dict[str, Any]]:
        found = await app.reviews.list(status, workflow, limit)
        return [review(view.request(r)) for r in found]

    @r.get("/{review_id:keel_id}")
    async def get_sample(review_id: str, view: Payloads = Depends(api.view)) -> dict[str, Any]:
        return review(view.request(await sample(review_id)))

    @r.post("/{review_id:keel_id}/verdict")
    async def verdict(
        review_id: str,
        body: Verdict,
        user: User = Depends(api.user),
        view: Payloads = Depends(api.view),
    ) -> dict[str, Any]:
        req = await sample(review_id)
        done = await api.decide(
            user,
            req.queue,
            req.status,
            f"sampled review {req.id}",
            lambda: app.reviews.verdict(
                review_id, body.correct, by=user.name, label=body.label, note=body.note
            ),
        )
        return review(view.request(done))

    return r
