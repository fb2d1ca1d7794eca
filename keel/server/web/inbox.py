"""The inbox (pending approvals and open escalations by queue, refreshed live) and the
list of recent decisions."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from keel.hitl.api import DECISION_KINDS, ReviewRequest
from keel.hitl.inbox import Inbox
from keel.presence import unserved
from keel.server.sessions import Session
from keel.server.web.context import Web
from keel.server.web.decisions import item, queues

_DECIDED_LIMIT = 200


def router(web: Web) -> APIRouter:
    r = web.router()
    app = web.app

    @r.get("/")
    async def home() -> Response:
        return web.back("/inbox")

    @r.get("/inbox", response_class=HTMLResponse)
    async def inbox(
        request: Request, queue: str | None = None, s: Session = Depends(web.session)
    ) -> Response:
        found = await queues(web, s.user, queue)
        total = sum(len(v) for _, v in found)
        # Decisions here resume runs only where a worker runs: say so when none does.
        idle = await unserved(app, [(i["run_id"], i["workflow"]) for _, v in found for i in v])
        return web.page(
            request, "inbox.html", queues=found, total=total, queue=queue, unserved=idle
        )

    @r.get("/inbox/items", response_class=HTMLResponse)
    async def inbox_items(
        queue: str | None = None, s: Session = Depends(web.session)
    ) -> Response:
        found = await queues(web, s.user, queue)
        total = sum(len(v) for _, v in found)
        html = web.fragment("_inbox_items.html", queues=found)
        return HTMLResponse(
            html, headers={"Cache-Control": "no-store", "X-Keel-Count": str(total)}
        )

    @r.get("/decided", response_class=HTMLResponse)
    async def decided(request: Request, s: Session = Depends(web.session)) -> Response:
        rows: list[ReviewRequest] = []
        for kind in DECISION_KINDS:
            rows += await Inbox(app).decided(kind, limit=_DECIDED_LIMIT)
        view = web.payloads.of(s.user)
        found = [view.request(r) for r in rows]
        found.sort(key=lambda r: r.decided_at or 0, reverse=True)
        items = [
            {**item(web, s.user, r, time.time()), "status": r.status, "queue": r.queue,
             "decided_by": r.decided_by, "decided_at": r.decided_at}
            for r in found[:_DECIDED_LIMIT]
        ]
        return web.page(request, "decided.html", items=items)

    return r
