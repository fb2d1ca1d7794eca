"""Long-term memory in the console: the namespaces, one namespace's memories (paged by
`seq`, superseded facts with their validity, the run that wrote each linked), a search
with each hit's relevance and a min-relevance control, an extraction run's items and
what became of each, and forgetting a memory (reviewer or admin; audited).

Memories are read through the user's payload view, like run payloads: a viewer sees
their text and metadata with secrets masked (keel.server.payloads)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from keel.app import App
from keel.errors import KeelError, MemoryNotFound
from keel.memory.extract import WORKFLOW as EXTRACTION
from keel.server.paths import url_id
from keel.server.sessions import Session
from keel.server.web.context import Posted, Refused, Web
from keel.store.records import MemoryRow

PAGE = 50  # memories per page
NAMESPACES_LIMIT = 1000
MAX_K = 50  # hits a console search may ask for


def run_of(source: str | None) -> str | None:
    """The run that wrote a memory (its `source` is `run:<id>`), if one did."""
    return source[4:] if source and source.startswith("run:") else None


def _row(row: MemoryRow, view: Any) -> dict[str, Any]:
    run = run_of(row.source)
    return {
        "row": row,
        "text": view.value(row.text),
        "metadata": view.value(row.metadata) if row.metadata else None,
        "run": run,
        "run_href": f"/runs/{url_id(run)}" if run else None,
        "current": row.valid_to is None,
    }


def _floor(text: str, errors: dict[str, str]) -> float | None:
    """The min-relevance field: blank, or a number in [0, 1]."""
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0.0 <= value <= 1.0):
        errors["min_relevance"] = (
            f"min relevance {text!r} is not a number from 0 to 1: 0.5 keeps hits as likely"
            " relevant as not; leave it blank to rank without a floor"
        )
        return None
    return value


def router(web: Web) -> APIRouter:
    r = web.router(refusal="forgetting a memory needs a reviewer or an admin")
    app = web.app

    @r.get("/memory", response_class=HTMLResponse)
    async def namespaces_page(request: Request, s: Session = Depends(web.session)) -> Response:
        found = await app.memory.namespaces(limit=NAMESPACES_LIMIT)
        rows = [{"ns": n, "href": f"/memory/{url_id(n.namespace)}"} for n in found]
        return web.page(request, "memory.html", rows=rows, limit=NAMESPACES_LIMIT)

    @r.get("/memory/{namespace:keel_id}", response_class=HTMLResponse)
    async def namespace_page(
        request: Request,
        namespace: str,
        after: int = 0,
        current: bool = False,
        q: str = "",
        min_relevance: str = "",
        k: int = 10,
        s: Session = Depends(web.session),
    ) -> Response:
        view = web.payloads.of(s.user)
        errors: dict[str, str] = {}
        floor = _floor(min_relevance, errors)
        if not 1 <= k <= MAX_K:
            errors["k"] = f"k is how many hits to show, from 1 to {MAX_K}; got {k}"
        hits: list[dict[str, Any]] | None = None
        if q.strip() and not errors:
            try:
                found = await app.memory.search(q, namespace=namespace, k=k, min_relevance=floor)
            except KeelError as exc:  # bad input, an embedder this namespace cannot use
                errors["q"] = exc.message
            else:
                rows = {h.id: await _row_or_none(app, h.id) for h in found}
                hits = [
                    {
                        "hit": h,
                        "text": view.value(h.text),
                        "metadata": view.value(h.metadata) if h.metadata else None,
                        "run_href": _run_href(rows.get(h.id)),
                    }
                    for h in found
                ]
        try:
            page = await app.memory.list(
                namespace=namespace, limit=PAGE, after=max(after, 0), current=current
            )
        except KeelError as exc:  # not a namespace name at all
            raise Refused(422, exc.message) from None
        more = len(page) == PAGE
        return web.page(
            request,
            "memory_namespace.html",
            status=422 if errors else 200,
            namespace=namespace,
            ns_href=f"/memory/{url_id(namespace)}",
            rows=[_row(m, view) for m in page],
            next_after=page[-1].seq if more else None,
            after=after,
            current=current,
            q=q,
            min_relevance=min_relevance,
            k=k,
            hits=hits,
            errors=errors,
            may_forget=s.user.at_least("reviewer"),
        )

    @r.post("/memory/{namespace:keel_id}/forget", response_class=HTMLResponse)
    async def forget(
        request: Request, namespace: str, posted: Posted = Depends(web.posted)
    ) -> Response:
        memory_id = posted.text("memory_id")
        if not memory_id:
            raise Refused(422, "Name the memory to forget (the form sends its id).")
        found = await _row_or_none(app, memory_id)
        if found is None or found.namespace != namespace:
            raise Refused(
                404,
                f"namespace {namespace!r} holds no memory {memory_id!r}: it was forgotten"
                " already, or belongs elsewhere; reload the page",
            )
        try:
            await app.memory.forget(memory_id, by=posted.user.name)
        except MemoryNotFound as exc:  # forgotten by someone else meanwhile
            raise Refused(404, exc.message) from None
        return web.back(f"/memory/{url_id(namespace)}")

    @r.get("/memory/extractions/{run_id:keel_id}", response_class=HTMLResponse)
    async def extraction_page(
        request: Request, run_id: str, s: Session = Depends(web.session)
    ) -> Response:
        view = web.payloads.of(s.user)
        run = await web.run_or_none(run_id)
        items = await app.memory.extracts(run_id)
        if run is None and not items:
            raise Refused(404, f"no extraction run {run_id!r}: it never ran, or was purged")
        counts: dict[str, int] = {}
        for it in items:
            counts[it.status] = counts.get(it.status, 0) + 1
        rows = [
            {
                "item": it,
                "text": view.value(it.text),
                "ns_href": f"/memory/{url_id(it.namespace)}",
            }
            for it in items
        ]
        return web.page(
            request,
            "memory_extraction.html",
            run=run,
            run_id=run_id,
            run_href=f"/runs/{url_id(run_id)}",
            rows=rows,
            counts=counts,
            other=run is not None and run.workflow != EXTRACTION and not items,
            extraction=EXTRACTION,
        )

    return r


async def _row_or_none(app: App, memory_id: str) -> MemoryRow | None:
    try:
        return await app.memory.get(memory_id)
    except MemoryNotFound:  # forgotten since it was found
        return None


def _run_href(row: MemoryRow | None) -> str | None:
    run = run_of(row.source) if row is not None else None
    return f"/runs/{url_id(run)}" if run else None
