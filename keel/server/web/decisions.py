"""What the inbox and the decision pages share: inbox rows and the after-decision notice.

A decision page shows, in order: why the item is here, the proposed action as editable
fields, the incoming request, the context the workflow chose, and (escalations) the
error. Every decision goes through `app.approvals` / `app.escalations`, exactly as the
API and the CLI do, so the same validation and the same audit log apply.
"""

from __future__ import annotations

import time
from typing import Any

from keel.app import App
from keel.hitl.api import ReviewRequest
from keel.presence import ResumeNotice, resume_notice
from keel.server.auth import User
from keel.server.paths import url_id
from keel.server.web.context import Web
from keel.server.web.format import call, preview
from keel.types import Escalation, RunInfo, RunStatus

INBOX_LIMIT = 500


def _proposal(req: ReviewRequest) -> str | None:
    """What the person is asked to accept, on one line of an inbox row."""
    if req.tool is not None:
        return call(req.tool, req.args)
    what = {"approval": "action", "low_confidence": "output", "novelty": "input"}.get(req.kind)
    value = req.request.get(what) if what else None
    return None if value is None else f"{what}: {preview(value, 110)}"


def item(web: Web, user: User, req: ReviewRequest, now: float) -> dict[str, Any]:
    """An approval (or low-confidence / novelty review) as an inbox row."""
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


def escalation_item(web: Web, user: User, esc: Escalation) -> dict[str, Any]:
    """An open escalation as an inbox row."""
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


async def queues(web: Web, user: User, queue: str | None) -> list[tuple[str, list[Any]]]:
    """Pending items grouped by queue: soonest deadline first, then oldest first."""
    now = time.time()
    view = web.payloads.of(user)
    items: dict[str, list[dict[str, Any]]] = {}
    for req in await web.app.approvals.list(queue, "pending", None, INBOX_LIMIT):
        items.setdefault(req.queue, []).append(item(web, user, view.request(req), now))
    for esc in await web.app.escalations.list("open", queue, INBOX_LIMIT):
        items.setdefault(esc.queue, []).append(escalation_item(web, user, view.escalation(esc)))
    for group in items.values():
        group.sort(key=lambda i: (i["deadline"] is None, i["deadline"] or 0, i["created_at"]))
    # Queues this user can act on first, then by name.
    return sorted(items.items(), key=lambda kv: (not kv[1][0]["can_decide"], kv[0]))


async def after_decision(
    app: App, run: RunInfo | None, decided: bool, then: str
) -> ResumeNotice | None:
    """For a decided item whose run is ready to go on: whether a live worker will take it."""
    if not decided or run is None or run.status is not RunStatus.PENDING:
        return None
    return await resume_notice(app, run.id, then, run)
