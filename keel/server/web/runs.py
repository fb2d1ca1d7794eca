"""The runs list (filters: workflow, status, created since / until) and a run's page:
its header, input and result, the journal as a tree with the state after every step,
the requests for people it made, and its trace as a waterfall.

The journal tree and its state fold are `keel.observe.journal_view`'s, the same that
`keel show` prints: each change is credited to the step after which it was made.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from keel.errors import InputError
from keel.hitl.api import DECISION_KINDS
from keel.hitl.inbox import Inbox
from keel.llm.costs import Costs
from keel.observe.journal_view import journal_view, starting_state, trim
from keel.server.paths import url_id
from keel.server.sessions import Session
from keel.server.timeparse import parse_time
from keel.server.web.context import Web
from keel.server.web.waterfall import layout, money
from keel.types import RunInfo, RunStatus

log = logging.getLogger("keel.server")

RUNS_LIMIT = 200
MAX_CHILDREN = 100  # per journal scope on the page; the rest is summarised
_REQUESTS_LIMIT = 10_000
STATUSES = [s.value for s in RunStatus]
_LOCAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?")


# -- reading a run -----------------------------------------------------------------------


def run_duration(run: RunInfo) -> float | None:
    return None if run.ended_at is None else max(run.ended_at - run.created_at, 0.0)


async def requests_of(web: Web, run: RunInfo) -> list[dict[str, Any]]:
    """The requests for a person this run made: approvals, reviews, samples, escalations."""
    reviews, escalations = await Inbox(web.app).of_run(run.id, _REQUESTS_LIMIT)
    out: list[dict[str, Any]] = []
    for req in reviews:
        base = "/approvals/" if req.kind in DECISION_KINDS else "/reviews/"
        out.append(
            {
                "id": req.id,
                "kind": req.kind,
                "step": req.step,
                "status": req.status,
                "queue": req.queue,
                "decided_by": req.decided_by,
                "created_at": req.created_at,
                "href": base + url_id(req.id),
            }
        )
    for esc in escalations:
        out.append(
            {
                "id": esc.id,
                "kind": f"{esc.kind} escalation",
                "step": esc.step,
                "status": esc.status,
                "queue": esc.queue,
                "decided_by": esc.resolved_by,
                "created_at": esc.created_at,
                "href": "/escalations/" + url_id(esc.id),
            }
        )
    out.sort(key=lambda r: (r["created_at"] or 0, str(r["id"])))
    return out


def _time_filter(text: str, name: str, errors: dict[str, str]) -> float | None:
    if not text.strip():
        return None
    try:
        return parse_time(text, name)
    except InputError as exc:
        errors[name] = exc.message
        return None


def _looks_local(text: str) -> bool:
    """What an `<input type=datetime-local>` can hold: `YYYY-MM-DDTHH:MM[:SS[.fff]]`."""
    return bool(_LOCAL.fullmatch(text))


# -- routes --------------------------------------------------------------------------------


def router(web: Web) -> APIRouter:
    r = web.router()
    app = web.app

    @r.get("/runs", response_class=HTMLResponse)
    async def runs_page(
        request: Request,
        workflow: str = "",
        status: str = "",
        since: str = "",
        until: str = "",
        s: Session = Depends(web.session),
    ) -> Response:
        errors: dict[str, str] = {}
        chosen: RunStatus | None = None
        if status.strip():
            try:
                chosen = RunStatus(status.strip().upper())
            except ValueError:
                errors["status"] = (
                    f"status {status!r} is not a run status; use one of {', '.join(STATUSES)}"
                )
        start = _time_filter(since, "since", errors)
        end = _time_filter(until, "until", errors)
        filters = {
            "workflow": workflow,
            "status": chosen.value if chosen else status,
            "since": since,
            "until": until,
            "since_type": "datetime-local" if not since or _looks_local(since) else "text",
            "until_type": "datetime-local" if not until or _looks_local(until) else "text",
        }
        rows: list[dict[str, Any]] = []
        if not errors:
            runs = await app.list_runs(
                chosen, workflow.strip() or None, RUNS_LIMIT, since=start, until=end
            )
            costs = await _costs(web, workflow.strip() or None, start)
            rows = [
                {
                    "run": r,
                    "href": "/runs/" + url_id(r.id),
                    "duration": run_duration(r),
                    "cost": costs.get(r.id),
                }
                for r in runs
            ]
        return web.page(
            request,
            "runs.html",
            status=422 if errors else 200,
            rows=rows,
            f=filters,
            errors=errors,
            statuses=STATUSES,
            limit=RUNS_LIMIT,
            money=money,
        )

    @r.get("/runs/{run_id:keel_id}", response_class=HTMLResponse)
    async def run_page(
        request: Request, run_id: str, s: Session = Depends(web.session)
    ) -> Response:
        payloads = web.payloads.of(s.user)
        run = payloads.run(await app.get_run(run_id))
        steps = [payloads.step(step) for step in await app.steps(run_id)]
        initial, fields = starting_state(app.registry, run.workflow)
        view = journal_view(run, steps, initial, fields)
        requests = await requests_of(web, run)
        by_key = view.by_key()
        for req in requests:
            node = by_key.get(str(req.get("step") or ""))
            if node is not None:
                node.requests.append(req)
        trace_error = None
        try:
            rows = layout([payloads.span(span) for span in await app.trace(run_id)])
        except Exception as exc:  # the journal still renders without the trace
            log.warning("trace of run %s unavailable: %s", run_id, exc, exc_info=True)
            rows, trace_error = [], f"{type(exc).__name__}: {exc}"
        return web.page(
            request,
            "run.html",
            run=run,
            steps=len(steps),
            journal=trim(view.roots, MAX_CHILDREN),
            view=view,
            requests=requests,
            waterfall=rows,
            trace_error=trace_error,
            cost=await Costs(app).spent(run_id=run.id),
            duration=run_duration(run),
            money=money,
        )

    return r


async def _costs(web: Web, workflow: str | None, since: float | None) -> dict[str, float]:
    """Metered model cost per run id (runs without model calls are absent)."""
    try:
        return await Costs(web.app).per_run(workflow=workflow, since=since)
    except Exception as exc:  # a store without usage metering still lists its runs
        log.warning("usage report unavailable: %s", exc)
        return {}
