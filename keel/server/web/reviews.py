"""Sampled reviews: the queue of completed runs picked for a person's verdict, and the
verdict form (correct / incorrect, an optional JSON label, a note).

Verdicts go through `app.reviews.verdict`, as the API's and the CLI's do, so the same
reviewer checks and the same audit log apply. A label that is not JSON, or does not fit
the workflow's output, is shown next to its field with status 422 and nothing is recorded.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from keel.errors import ConfigError, InputError
from keel.hitl.api import ReviewRequest
from keel.hitl.inbox import Inbox
from keel.server.paths import url_id
from keel.server.sessions import Session
from keel.server.web.context import Posted, Refused, Web
from keel.server.web.fields import form_json
from keel.server.web.format import preview

REVIEWS_LIMIT = 500
STATUSES = ("pending", "correct", "incorrect", "all")
VERDICTS = ("correct", "incorrect")


def router(web: Web) -> APIRouter:
    r = web.router(refusal="deciding needs a reviewer")
    app = web.app

    async def sample(review_id: str) -> ReviewRequest:
        req: ReviewRequest = await app.reviews.get(review_id)
        if req.kind != "sample":
            raise Refused(404, f"{review_id} is a {req.kind} request, not a sampled review")
        return req

    @r.get("/reviews", response_class=HTMLResponse)
    async def reviews_page(
        request: Request,
        status: str = "pending",
        workflow: str = "",
        s: Session = Depends(web.session),
    ) -> Response:
        chosen = status.strip().lower() or "pending"
        error = None
        found: list[ReviewRequest] = []
        if chosen not in STATUSES:
            error = f"status {status!r} is not one of {', '.join(STATUSES)}"
        else:
            wf = workflow.strip() or None
            if chosen == "pending":  # oldest first: first in, first reviewed
                found = await app.reviews.list(chosen, wf, REVIEWS_LIMIT)
            else:  # decided ones: the latest decisions first (and pending ones after, for all)
                found = await Inbox(app).decided(
                    "sample", None if chosen == "all" else chosen, wf, REVIEWS_LIMIT
                )
                if chosen == "all" and len(found) < REVIEWS_LIMIT:
                    found += await app.reviews.list("pending", wf, REVIEWS_LIMIT - len(found))
        view = web.payloads.of(s.user)
        found = [view.request(r) for r in found]
        items = [
            {
                "id": r.id,
                "href": f"/reviews/{url_id(r.id)}",
                "run_id": r.run_id,
                "workflow": r.workflow,
                "queue": r.queue,
                "status": r.status,
                "created_at": r.created_at,
                "decided_by": r.decided_by,
                "input": preview(r.request.get("input")),
                "result": preview(r.request.get("result")),
                "can_decide": r.status == "pending" and web.may_decide(s.user, r.queue),
            }
            for r in found
        ]
        return web.page(
            request,
            "reviews.html",
            status=422 if error else 200,
            items=items,
            f={"status": chosen, "workflow": workflow},
            statuses=STATUSES,
            error=error,
            limit=REVIEWS_LIMIT,
        )

    async def show(
        request: Request, session: Session, req: ReviewRequest, status: int = 200, **values: Any
    ) -> Response:
        values.setdefault("label_text", "")
        values.setdefault("note", "")
        run = await web.run_or_none(req.run_id)
        view = web.payloads.of(session.user)
        return web.page(
            request,
            "review.html",
            status=status,
            req=view.request(req),
            run=view.run(run) if run else None,
            can_decide=web.may_decide(session.user, req.queue),
            audit=view.audit(await app.reviews.audit(req.id)),
            **values,
        )

    @r.get("/reviews/{review_id:keel_id}", response_class=HTMLResponse)
    async def review_page(
        request: Request, review_id: str, s: Session = Depends(web.session)
    ) -> Response:
        return await show(request, s, await sample(review_id))

    @r.post("/reviews/{review_id:keel_id}/verdict", response_class=HTMLResponse)
    async def verdict(
        request: Request, review_id: str, posted: Posted = Depends(web.posted)
    ) -> Response:
        req = await sample(review_id)
        web.require_decider(posted.user, req.queue)
        label_text = posted.form.get("label", "")
        kept = {"label_text": label_text, "note": posted.form.get("note", "")}
        if req.status != "pending":
            return await show(
                request, posted.session, req, 409,
                form_error=f"already {req.status} by {req.decided_by or 'someone'}; "
                "a verdict is final",
            )
        choice = posted.text("verdict").lower()
        if choice not in VERDICTS:
            return await show(
                request, posted.session, req, 422,
                form_error="Choose “Correct” or “Incorrect”.", **kept,
            )
        label = None
        if label_text.strip():
            try:
                label = form_json(label_text)
            except ValueError as exc:
                return await show(
                    request, posted.session, req, 422, label_error=str(exc), **kept
                )
        try:
            await app.reviews.verdict(
                req.id,
                choice == "correct",
                by=posted.user.name,
                label=label,
                note=posted.text("note") or None,
            )
        except InputError as exc:
            if exc.data.get("field") == "label":  # shown by the field it is about
                return await show(request, posted.session, req, 422, label_error=exc.message,
                                  **kept)
            return await show(request, posted.session, req, 422, form_error=exc.message, **kept)
        except ConfigError as exc:
            fresh = await sample(req.id)
            return await show(
                request, posted.session, fresh, 409 if fresh.status != "pending" else 403,
                form_error=exc.message,
            )
        return web.back(f"/reviews/{url_id(req.id)}")

    return r
