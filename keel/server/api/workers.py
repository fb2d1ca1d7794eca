"""`/api/v1/workers`: the live workers, who will resume decided runs."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter

from keel.presence import live_workers
from keel.server.api.base import Api


def router(api: Api) -> APIRouter:
    r = api.router("/workers")

    @r.get("")
    async def list_workers() -> list[dict[str, Any]]:
        """Live workers: who will resume decided runs (see `keel workers`)."""
        return [
            {**dataclasses.asdict(w), "workflows": list(w.workflows)}
            for w in await live_workers(api.app)
        ]

    return r
