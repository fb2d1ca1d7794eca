"""Escalation pages: a failed tool or phase handed to a person, resolved with a checked
result (or state edits, for a phase) or rejected."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from keel.errors import ConfigError, InputError
from keel.server.paths import url_id
from keel.server.sessions import Session
from keel.server.web.context import Posted, Web
from keel.server.web.decisions import after_decision
from keel.server.web.fields import form_json
from keel.types import Escalation


def router(web: Web) -> APIRouter:
    r = web.router(refusal="deciding needs a reviewer")
    app = web.app

    async def show_escalation(
        request: Request, session: Session, esc: Escalation, status: int = 200, **values: Any
    ) -> Response:
        values.setdefault("result", "")
        values.setdefault("reason", "")
        values.setdefault("note", "")
        run = await web.run_or_none(esc.run_id)
        view = web.payloads.of(session.user)
        shown = view.escalation(esc)
        return web.page(
            request,
            "escalation.html",
            status=status,
            esc=shown,
            p=shown.packet,
            incoming=view.run(run).input if run else None,
            can_decide=web.may_decide(session.user, esc.queue),
            audit=view.audit(await app.approvals.audit(esc.id)),
            notice=await after_decision(
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

    @r.get("/escalations/{escalation_id:keel_id}", response_class=HTMLResponse)
    async def escalation_page(
        request: Request, escalation_id: str, s: Session = Depends(web.session)
    ) -> Response:
        return await show_escalation(request, s, await app.escalations.get(escalation_id))

    @r.post("/escalations/{escalation_id:keel_id}/resolve", response_class=HTMLResponse)
    async def resolve(
        request: Request, escalation_id: str, posted: Posted = Depends(web.posted)
    ) -> Response:
        esc = await app.escalations.get(escalation_id)
        web.require_decider(posted.user, esc.queue)
        text = posted.form.get("result", "")
        note = posted.text("note") or None
        kept = {"result": text, "note": posted.form.get("note", "")}
        try:
            result = form_json(text) if text.strip() else None
        except ValueError as exc:
            return await show_escalation(
                request, posted.session, esc, 422, result_error=str(exc), **kept
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

    @r.post("/escalations/{escalation_id:keel_id}/reject", response_class=HTMLResponse)
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

    return r
