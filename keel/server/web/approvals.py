"""Approval pages: approvals of tools and actions, low-confidence outputs and novel inputs.

The proposed action is a form generated from the tool's signature; edits, corrections and
rejections go through `app.approvals` as the API's and the CLI's do.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from keel.errors import ConfigError, InputError
from keel.hitl.api import DECISION_KINDS, ReviewRequest
from keel.hitl.inbox import Inbox
from keel.server.paths import url_id
from keel.server.payloads import NO_RAW_EDIT
from keel.server.sessions import Session
from keel.server.web.context import Posted, Refused, Web
from keel.server.web.decisions import after_decision
from keel.server.web.fields import Field, fields_for, form_json, place_problems, read_back


def router(web: Web) -> APIRouter:
    r = web.router(refusal="deciding needs a reviewer")
    app = web.app

    async def approval(review_id: str) -> ReviewRequest:
        req: ReviewRequest = await app.approvals.get(review_id)
        if req.kind not in DECISION_KINDS:
            raise Refused(404, f"{review_id} is a {req.kind} review, not an approval")
        return req

    def arg_fields(req: ReviewRequest) -> list[Field]:
        schema = req.request.get("args_schema")
        if req.kind != "approval" or not isinstance(schema, dict) or req.args is None:
            return []
        return fields_for(schema, req.args)

    async def show(
        request: Request,
        session: Session,
        req: ReviewRequest,
        status: int = 200,
        fields: list[Field] | None = None,
        **values: Any,
    ) -> Response:
        run = await web.run_or_none(req.run_id)
        view = web.payloads.of(session.user)
        can_decide = web.may_decide(session.user, req.queue)
        req = view.request(req)
        if fields is None:
            # Editable fields hold the proposal: one who sees it masked approves it as it is.
            fields = arg_fields(req) if view.raw or not can_decide else []
        output = req.request.get("output")
        text = json.dumps(output, indent=2, ensure_ascii=False) if output is not None else ""
        values.setdefault("output_text", text)
        values.setdefault("note", "")
        values.setdefault("reason", "")
        return web.page(
            request,
            "approval.html",
            status=status,
            req=req,
            fields=fields,
            can_decide=can_decide,
            audit=view.audit(await app.approvals.audit(req.id)),
            incoming=req.request.get("incoming", view.run(run).input if run else None),
            context=req.request.get("context") or req.request.get("prompt"),
            waiting=await Inbox(app).waiting(DECISION_KINDS, req.queue),
            output_original=text,
            notice=await after_decision(
                app, run, req.status != "pending",
                "continues with the rejection" if req.status == "rejected" else "resumes",
            ),
            **values,
        )

    async def open_for(posted: Posted, review_id: str) -> ReviewRequest:
        req = await approval(review_id)
        web.require_decider(posted.user, req.queue)
        return req

    async def decide(
        request: Request, posted: Posted, req: ReviewRequest, act: Callable[[], Awaitable[Any]]
    ) -> Response:
        """Make a decision, then show it. Bad input (`InputError`) is the caller's to show;
        a decision someone else made first shows as a 409 page with theirs."""
        if req.status != "pending":
            return await show(request, posted.session, req, 409,
                              form_error=f"already {req.status} by {req.decided_by}")
        try:
            await act()
        except ConfigError as exc:
            fresh = await approval(req.id)
            code = 409 if fresh.status != "pending" else 403
            return await show(request, posted.session, fresh, code, form_error=exc.message)
        return web.back(f"/approvals/{url_id(req.id)}")

    @r.get("/approvals/{review_id:keel_id}", response_class=HTMLResponse)
    async def approval_page(
        request: Request, review_id: str, s: Session = Depends(web.session)
    ) -> Response:
        return await show(request, s, await approval(review_id))

    @r.get("/approvals/{review_id:keel_id}/live")
    async def approval_live(review_id: str, s: Session = Depends(web.session)) -> Response:
        """Polled by an open decision page: tells it if someone else decided meanwhile."""
        req = await approval(review_id)
        # polled every few seconds by each open page: a count, not the requests
        waiting = await Inbox(app).waiting(DECISION_KINDS, req.queue)
        return JSONResponse(
            {"status": req.status, "decided_by": req.decided_by, "waiting": waiting},
            headers={"Cache-Control": "no-store"},
        )

    @r.post("/approvals/{review_id:keel_id}/approve", response_class=HTMLResponse)
    async def approve(
        request: Request, review_id: str, posted: Posted = Depends(web.posted)
    ) -> Response:
        req = await open_for(posted, review_id)
        note = posted.text("note") or None

        async def as_proposed() -> Any:
            return await app.approvals.approve(req.id, by=posted.user.name, note=note)

        # None for outputs, inputs and free-form actions, and for a reviewer who sees the
        # proposal masked: they approve it as proposed.
        fields = arg_fields(req) if web.payloads.of(posted.user).raw else []
        if not fields:
            return await decide(request, posted, req, as_proposed)
        args, ok = read_back(fields, posted.form)
        if not ok:
            error = "Some values could not be read; see below."
        elif args == req.args:
            return await decide(request, posted, req, as_proposed)
        else:
            try:
                return await decide(
                    request, posted, req,
                    lambda: app.approvals.edit(req.id, args, by=posted.user.name, note=note),
                )
            except InputError as exc:
                left = place_problems(fields, list(exc.data.get("problems") or []))
                error = "; ".join(left) if left else "Some values are not allowed; see below."
        return await show(request, posted.session, req, 422, fields=fields,
                          form_error=error, note=posted.form.get("note", ""))

    @r.post("/approvals/{review_id:keel_id}/correct", response_class=HTMLResponse)
    async def correct(
        request: Request, review_id: str, posted: Posted = Depends(web.posted)
    ) -> Response:
        req = await open_for(posted, review_id)
        if not web.payloads.of(posted.user).raw:
            raise Refused(403, NO_RAW_EDIT.format(user=posted.user))
        text = posted.form.get("output", "")
        note = posted.text("note") or None
        try:
            output = form_json(text)
        except ValueError as exc:
            return await show(request, posted.session, req, 422, output_text=text,
                              output_error=str(exc), note=posted.form.get("note", ""))
        try:
            return await decide(
                request, posted, req,
                lambda: app.approvals.correct(req.id, output, by=posted.user.name, note=note),
            )
        except InputError as exc:
            return await show(request, posted.session, req, 422, output_text=text,
                              output_error=exc.message, note=posted.form.get("note", ""))

    @r.post("/approvals/{review_id:keel_id}/reject", response_class=HTMLResponse)
    async def reject(
        request: Request, review_id: str, posted: Posted = Depends(web.posted)
    ) -> Response:
        req = await open_for(posted, review_id)
        reason = posted.text("reason")
        if not reason:
            return await show(request, posted.session, req, 422,
                              reason_error="A rejection needs a reason: the run's record says why.")
        return await decide(
            request, posted, req,
            lambda: app.approvals.reject(req.id, reason, by=posted.user.name),
        )

    return r
