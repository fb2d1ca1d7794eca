"""`/api/v1/workers`: the live workers, who will resume decided runs."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fastapi import APIRouter

from keel.backends.temporal.pollers import listed_workers
from keel.server.api.base import Api


def router(api: Api) -> APIRouter:
    r = api.router("/workers")

    @r.get("")
    async def list_workers() -> list[dict[str, Any]]:
        """Live workers: who will resume decided runs (see `keel workers`); on Temporal,
        the Temporal workers polling the App's task queue too (`executor: temporal`)."""
        listed = await listed_workers(api.app)
        now = time.time()
        ours = [
            {**dataclasses.asdict(w), "workflows": list(w.workflows), "executor": "keel"}
            for w in listed.keel
            if w.live(now)
        ]
        return ours + [t.as_json(now) for t in listed.temporal if t.live(now)]

    return r
