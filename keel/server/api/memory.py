"""`/api/v1/memory`: long-term memory, read only: the namespaces, a namespace's memories
(paged by `seq`), a search with relevance scores, and an extraction run's items.
Texts and metadata reach each user through their payload view, like run payloads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from keel.errors import KeelError
from keel.server.api.base import Api, Limit
from keel.server.payloads import Payloads
from keel.store.records import MemoryRow

K = Annotated[int, Query(ge=1, le=100, description="At most this many hits (1-100)")]
Relevance = Annotated[
    float | None, Query(ge=0, le=1, description="Only hits at least this relevant")
]


def _memory(row: MemoryRow, view: Payloads) -> dict[str, Any]:
    return {
        "id": row.id,
        "seq": row.seq,
        "text": view.value(row.text),
        "metadata": view.value(row.metadata),
        "valid_from": row.valid_from,
        "valid_to": row.valid_to,
        "superseded_by": row.superseded_by,
        "source": row.source,
        "created_at": row.created_at,
    }


def router(api: Api) -> APIRouter:
    r = api.router("/memory")
    app = api.app

    @r.get("")
    async def namespaces(limit: Limit = 1000) -> list[dict[str, Any]]:
        found = await app.memory.namespaces(limit=limit)
        return [
            {
                "namespace": n.namespace,
                "current": n.current,
                "superseded": n.superseded,
                "last_added": n.last_added,
            }
            for n in found
        ]

    @r.get("/extractions/{run_id:keel_id}")
    async def extraction(run_id: str, view: Payloads = Depends(api.view)) -> dict[str, Any]:
        items = await app.memory.extracts(run_id)
        return {
            "run_id": run_id,
            "items": [
                {
                    "item": i.item,
                    "status": i.status,
                    "text": view.value(i.text),
                    "reason": i.reason,
                    "memory_id": i.memory_id,
                    "namespace": i.namespace,
                }
                for i in items
            ],
        }

    @r.get("/{namespace:keel_id}")
    async def memories(
        namespace: str,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Limit = 100,
        current: bool = False,
        view: Payloads = Depends(api.view),
    ) -> dict[str, Any]:
        try:
            rows = await app.memory.list(
                namespace=namespace, limit=limit, after=after, current=current
            )
        except KeelError as exc:
            raise HTTPException(422, exc.message) from None
        return {
            "namespace": namespace,
            "memories": [_memory(m, view) for m in rows],
            "next_after": rows[-1].seq if len(rows) == limit else None,
        }

    @r.get("/{namespace:keel_id}/search")
    async def search(
        namespace: str,
        q: Annotated[str, Query(min_length=1, max_length=10_000)],
        k: K = 5,
        min_relevance: Relevance = None,
        view: Payloads = Depends(api.view),
    ) -> list[dict[str, Any]]:
        try:
            hits = await app.memory.search(q, namespace=namespace, k=k, min_relevance=min_relevance)
        except KeelError as exc:  # an empty query, an embedder the namespace cannot use
            raise HTTPException(422, exc.message) from None
        return [
            {
                "id": h.id,
                "text": view.value(h.text),
                "score": h.score,
                "metadata": view.value(h.metadata),
            }
            for h in hits
        ]

    return r
