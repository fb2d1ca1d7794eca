"""`/api/v1/runs`: run summaries, one run with its journal, its trace."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Depends

from keel.server.api.base import Api, Limit, Name, RunStatusName
from keel.server.payloads import Payloads
from keel.server.timeparse import parse_time


def _span(span: Any) -> dict[str, Any]:
    out = dataclasses.asdict(span)
    for key in ("span_id", "trace_id", "parent_id"):
        if isinstance(out.get(key), int):
            out[key] = f"{out[key]:x}"
    out["links"] = [f"{x:x}" if isinstance(x, int) else x for x in out.get("links") or []]
    return out


def router(api: Api) -> APIRouter:
    r = api.router("/runs")
    app = api.app

    @r.get("")
    async def list_runs(
        status: RunStatusName | None = None,
        workflow: Name | None = None,
        limit: Limit = 100,
        since: str | None = None,
        until: str | None = None,
        session: str | None = None,
        view: Payloads = Depends(api.view),
    ) -> list[dict[str, Any]]:
        start = None if since is None else parse_time(since, "since")
        end = None if until is None else parse_time(until, "until")
        runs = await app.list_runs(
            status, workflow, limit, since=start, until=end, session=session
        )
        return [view.run(r).summary() for r in runs]

    @r.get("/{run_id:keel_id}")
    async def get_run(run_id: str, view: Payloads = Depends(api.view)) -> dict[str, Any]:
        info = await app.get_run(run_id)
        steps = await app.steps(run_id)
        return {
            "run": view.run(info).model_dump(mode="json"),
            "journal": [view.step(s).model_dump(mode="json") for s in steps],
        }

    @r.get("/{run_id:keel_id}/trace")
    async def get_trace(run_id: str, view: Payloads = Depends(api.view)) -> dict[str, Any]:
        spans = await app.trace(run_id)
        return {"run_id": run_id, "spans": [_span(view.span(s)) for s in spans]}

    return r
