"""Drift in the console: every monitor's status now, and a plot of each over time with
its reference band and where the recent window starts (keel.drift; docs/drift.md)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from keel.server.sessions import Session
from keel.server.web.context import Web
from keel.server.web.drift_svg import plot

POINTS = 2000  # observations per plot, the newest


def router(web: Web) -> APIRouter:
    r = web.router()

    @r.get("/drift", response_class=HTMLResponse)
    async def drift_page(
        request: Request, workflow: str = "", s: Session = Depends(web.session)
    ) -> Response:
        drift = web.app.drift
        rows = []
        for row in await drift.report(workflow.strip() or None):
            series = await drift.series(row.workflow, row.monitor, POINTS)
            title = f"{row.workflow} · {row.monitor}: {row.status}"
            rows.append({"row": row, "svg": Markup(plot(series, title))})
        return web.page(request, "drift.html", rows=rows, workflow=workflow)

    return r
