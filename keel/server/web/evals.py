"""Eval results in the console: a suite's history (`keel eval --store URL` keeps them in
the store the console reads) and one suite run's cases, each beside the same case in
the suite's previous run, with a link to the case's run and its trace."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from keel.evals.history import EvalHistory
from keel.server.paths import url_id
from keel.server.sessions import Session
from keel.server.web.context import Web

EVALS_LIMIT = 200


def _ok(score: dict[str, Any]) -> bool:
    """A stored score passed (`keel.evals.Score.ok`: `passed`, else a value of 1)."""
    passed = score.get("passed")
    return bool(passed) if passed is not None else float(score.get("value", 0)) >= 1.0


def router(web: Web) -> APIRouter:
    r = web.router()
    history = EvalHistory(web.app)

    @r.get("/evals", response_class=HTMLResponse)
    async def evals_page(
        request: Request, suite: str = "", s: Session = Depends(web.session)
    ) -> Response:
        found = await history.list(suite.strip() or None, EVALS_LIMIT)
        rows = [
            {
                "result": e,
                "href": f"/evals/{url_id(e.id)}",
                "means": e.summary.get("means") or {},
                "failures": e.summary.get("failures") or [],
            }
            for e in found
        ]
        return web.page(request, "evals.html", rows=rows, suite=suite, limit=EVALS_LIMIT)

    @r.get("/evals/{eval_id:keel_id}", response_class=HTMLResponse)
    async def eval_page(
        request: Request, eval_id: str, s: Session = Depends(web.session)
    ) -> Response:
        detail = await history.detail(eval_id)
        rows = [
            {
                "change": c,
                "run_href": f"/runs/{url_id(c.case.run_id)}" if c.case.run_id else None,
                "failing": {
                    k: v.get("reason") or v.get("value")
                    for k, v in c.case.scores.items()
                    if isinstance(v, dict) and not _ok(v)
                },
            }
            for c in sorted(detail.cases, key=lambda c: (not c.worse, c.case.case_id))
        ]
        return web.page(
            request,
            "eval.html",
            detail=detail,
            rows=rows,
            summary=detail.result.summary,
            previous_href=f"/evals/{url_id(detail.previous.id)}" if detail.previous else None,
        )

    return r
