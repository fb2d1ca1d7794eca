"""The inbox and the decision pages: approvals, low-confidence and novelty reviews, escalations.

A decision page shows, in order: why the item is here, the proposed action as editable
fields, the incoming request, the context the workflow chose, and (escalations) the
error. Every decision goes through `app.approvals` / `app.escalations`, exactly as the
API and the CLI do, so the same validation and the same audit log apply.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from keel.app import App
from keel.errors import ConfigError, InputError
from keel.hitl.api import DECISION_KINDS, ReviewRequest
from keel.presence import ResumeNotice, resume_notice, unserved
from keel.server.auth import User
from keel.server.sessions import Session
from keel.server.web.context import Posted, Refused, Web
from keel.server.web.fields import Field, fields_for, place_problems, read_back
from keel.server.web.format import call, preview, url_id
from keel.types import Escalation, RunInfo, RunStatus

_INBOX_LIMIT = 500
_DECIDED_LIMIT = 200


def _proposal(req: ReviewRequest) -> str | None:
    """What the person is asked to accept, on one line of an inbox row."""
    if req.tool is not None:
        return call(req.tool, req.args)
    what = {"approval": "action", "low_confidence": "output", "novelty": "input"}.get(req.kind)
    value = req.request.get(what) if what else None
    return None if value is None else f"{what}: {preview(value, 110)}"


def _item(web: Web, user: User, req: ReviewRequest, now: float) -> dict[str, Any]:
    return {
        "id": req.id,
        "run_id": req.run_id,
        "kind": req.kind,
        "href": f"/approvals/{url_id(req.id)}",
        "tool": req.tool,
        "proposal": _proposal(req),
        "step": req.step,
        "reason": req.reason,
        "workflow": req.workflow,
        "created_at": req.created_at,
        "deadline": req.deadline,
        "overdue": req.deadline is not None and req.deadline < now,
        "can_decide": web.may_decide(user, req.queue),
    }


def _escalation_item(web: Web, user: User, esc: Escalation, now: float) -> dict[str, Any]:
    return {
        "id": esc.id,
        "run_id": esc.run_id,
        "kind": "escalation",
        "href": f"/escalations/{url_id(esc.id)}",
        "tool": esc.packet.tool or esc.packet.phase,
        "proposal": call(esc.packet.tool, esc.packet.input) if esc.packet.tool else None,
        "step": esc.step,
        "reason": esc.packet.reason,
        "workflow": esc.workflow,
        "created_at": esc.created_at,
        "deadline": None,
        "overdue": False,
        "can_decide": web.may_decide(user, esc.queue),
    }


async def _queues(web: Web, user: User, queue: str | None) -> list[tuple[str, list[Any]]]:
    """Pending items grouped by queue: soonest deadline first, then oldest first."""
    now = time.time()
    items: dict[str, list[dict[str, Any]]] = {}
    for req in await web.app.approvals.list(queue, "pending", None, _INBOX_LIMIT):
        items.setdefault(req.queue, []).append(_item(web, user, req, now))
    for esc in await web.app.escalations.list("open", queue, _INBOX_LIMIT):
        items.setdefault(esc.queue, []).append(_escalation_item(web, user, esc, now))
    for group in items.values():
        group.sort(key=lambda i: (i["deadline"] is None, i["deadline"] or 0, i["created_at"]))
    # Queues this user can act on first, then by name.
    return sorted(items.items(), key=lambda kv: (not kv[1][0]["can_decide"], kv[0]))


async def _after_decision(
    app: App, run: RunInfo | None, decided: bool, then: str
) -> ResumeNotice | None:
    """For a decided item whose run is ready to go on: whether a live worker will take it."""
    if not decided or run is None or run.status is not RunStatus.PENDING:
        return None
    return await resume_notice(app, run.id, then)


def add_routes(web: Web, router: FastAPI) -> None:
    """Register this module's pages on the console's app."""
    app = web.app

    @router.get("/inbox", response_class=HTMLResponse)
    async def inbox(
        request: Request, queue: str | None = None, s: Session = Depends(web.viewer)
    ) -> Response:
        queues = await _queues(web, s.user, queue)
        total = sum(len(v) for _, v in queues)
        # Decisions here resume runs only where a worker runs: say so when none does.
        idle = await unserved(app, [(i["run_id"], i["workflow"]) for _, v in queues for i in v])
        return web.page(
            request, "inbox.html", queues=queues, total=total, queue=queue, unserved=idle
        )

    @router.get("/inbox/items", response_class=HTMLResponse)
    async def inbox_items(queue: str | None = None, s: Session = Depends(web.viewer)) -> Response:
        queues = await _queues(web, s.user, queue)
        total = sum(len(v) for _, v in queues)
        html = web.fragment("_inbox_items.html", queues=queues)
        return HTMLResponse(
            html, headers={"Cache-Control": "no-store", "X-Keel-Count": str(total)}
        )

    @router.get("/decided", response_class=HTMLResponse)
    async def decided(request: Request, s: Session = Depends(web.viewer)) -> Response:
        rows = []
        for kind in DECISION_KINDS:
            rows += await app.store.list_reviews(kind, limit=_DECIDED_LIMIT, latest_decided=True)
        found = [ReviewRequest.model_validate(r) for r in rows]
        found.sort(key=lambda r: r.decided_at or 0, reverse=True)
        items = [
            {**_item(web, s.user, r, time.time()), "status": r.status, "queue": r.queue,
             "decided_by": r.decided_by, "decided_at": r.decided_at}
            for r in found[:_DECIDED_LIMIT]
        ]
        return web.page(request, "decided.html", items=items)

    # -- approvals --------------------------------------------------------------------

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
        run = await app.store.get_run(req.run_id)
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
            fields=arg_fields(req) if fields is None else fields,
            can_decide=web.may_decide(session.user, req.queue),
            audit=await app.approvals.audit(req.id),
            incoming=req.request.get("incoming", run.input if run else None),
            context=req.request.get("context") or req.request.get("prompt"),
            waiting=await app.store.count_reviews(DECISION_KINDS, "pending", req.queue),
            output_original=text,
            notice=await _after_decision(
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

    @router.get("/approvals/{review_id}", response_class=HTMLResponse)
    async def approval_page(
        request: Request, review_id: str, s: Session = Depends(web.viewer)
    ) -> Response:
        return await show(request, s, await approval(review_id))

    @router.get("/approvals/{review_id}/live")
    async def approval_live(review_id: str, s: Session = Depends(web.viewer)) -> Response:
        """Polled by an open decision page: tells it if someone else decided meanwhile."""
        req = await approval(review_id)
        # polled every few seconds by each open page: a count, not the requests
        waiting = await app.store.count_reviews(DECISION_KINDS, "pending", req.queue)
        return JSONResponse(
            {"status": req.status, "decided_by": req.decided_by, "waiting": waiting},
            headers={"Cache-Control": "no-store"},
        )

    @router.post("/approvals/{review_id}/approve", response_class=HTMLResponse)
    async def approve(
        request: Request, review_id: str, posted: Posted = Depends(web.posted)
    ) -> Response:
        req = await open_for(posted, review_id)
        note = posted.text("note") or None

        async def as_proposed() -> Any:
            return await app.approvals.approve(req.id, by=posted.user.name, note=note)

        fields = arg_fields(req)  # none for outputs, inputs and free-form actions
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

    @router.post("/approvals/{review_id}/correct", response_class=HTMLResponse)
    async def correct(
        request: Request, review_id: str, posted: Posted = Depends(web.posted)
    ) -> Response:
        req = await open_for(posted, review_id)
        text = posted.form.get("output", "")
        note = posted.text("note") or None
        try:
            output = json.loads(text)
        except json.JSONDecodeError as exc:
            return await show(request, posted.session, req, 422, output_text=text,
                              output_error=f"not valid JSON: {exc.msg} (line {exc.lineno})",
                              note=posted.form.get("note", ""))
        try:
            return await decide(
                request, posted, req,
                lambda: app.approvals.correct(req.id, output, by=posted.user.name, note=note),
            )
        except InputError as exc:
            return await show(request, posted.session, req, 422, output_text=text,
                              output_error=exc.message, note=posted.form.get("note", ""))

    @router.post("/approvals/{review_id}/reject", response_class=HTMLResponse)
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

    # -- escalations ------------------------------------------------------------------

    async def show_escalation(
        request: Request, session: Session, esc: Escalation, status: int = 200, **values: Any
    ) -> Response:
        values.setdefault("result", "")
        values.setdefault("reason", "")
        values.setdefault("note", "")
        run = await app.store.get_run(esc.run_id)
        return web.page(
            request,
            "escalation.html",
            status=status,
            esc=esc,
            p=esc.packet,
            incoming=run.input if run else None,
            can_decide=web.may_decide(session.user, esc.queue),
            audit=await app.approvals.audit(esc.id),
            notice=await _after_decision(
                app, run, esc.status != "open",
                "continues with the failure" if esc.status == "rejected" else "resumes",
            ),
            **values,
        )

    async def settle(
        request: Request, posted: Posted, esc: Escalation, act: Callable[[], Awaitable[Any]]
    ) -> Response:
        """Resolve or reject, then show it; like `decide`, for escalations."""
        if esc.status != "open":
            return await show_escalation(request, posted.session, esc, 409,
                                         form_error=f"already {esc.status} by {esc.resolved_by}")
        try:
            await act()
        except ConfigError as exc:
            fresh = await app.escalations.get(esc.id)
            code = 409 if fresh.status != "open" else 403
            return await show_escalation(request, posted.session, fresh, code,
                                         form_error=exc.message)
        return web.back(f"/escalations/{url_id(esc.id)}")

    @router.get("/escalations/{escalation_id}", response_class=HTMLResponse)
    async def escalation_page(
        request: Request, escalation_id: str, s: Session = Depends(web.viewer)
    ) -> Response:
        return await show_escalation(request, s, await app.escalations.get(escalation_id))

    @router.post("/escalations/{escalation_id}/resolve", response_class=HTMLResponse)
    async def resolve(
        request: Request, escalation_id: str, posted: Posted = Depends(web.posted)
    ) -> Response:
        esc = await app.escalations.get(escalation_id)
        web.require_decider(posted.user, esc.queue)
        text = posted.form.get("result", "")
        note = posted.text("note") or None
        kept = {"result": text, "note": posted.form.get("note", "")}
        try:
            result = json.loads(text) if text.strip() else None
        except json.JSONDecodeError as exc:
            return await show_escalation(
                request, posted.session, esc, 422,
                result_error=f"not valid JSON: {exc.msg} (line {exc.lineno})", **kept,
            )
        try:
            return await settle(
                request, posted, esc,
                lambda: app.escalations.resolve(esc.id, result, by=posted.user.name, note=note),
            )
        except InputError as exc:
            return await show_escalation(
                request, posted.session, esc, 422, result_error=exc.message, **kept
            )

    @router.post("/escalations/{escalation_id}/reject", response_class=HTMLResponse)
    async def reject_escalation(
        request: Request, escalation_id: str, posted: Posted = Depends(web.posted)
    ) -> Response:
        esc = await app.escalations.get(escalation_id)
        web.require_decider(posted.user, esc.queue)
        reason = posted.text("reason")
        if not reason:
            return await show_escalation(
                request, posted.session, esc, 422,
                reason_error="A rejection needs a reason: the run's record says why.",
            )
        return await settle(
            request, posted, esc,
            lambda: app.escalations.reject(esc.id, reason, by=posted.user.name),
        )

