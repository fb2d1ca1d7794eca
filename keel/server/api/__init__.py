"""The versioned JSON API (`/api/v1`) of the review console, one router per resource.

Every router comes from `Api.router`, which makes a token and a role (by method: reads
need `viewer`, writes `reviewer`, `/users` needs `admin`) a dependency of every route.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from keel.server.api import approvals, escalations, memory, meta, reviews, runs, users, workers
from keel.server.api.base import API, Api

__all__ = ["API", "Api", "routers"]


def routers(api: Api, server: FastAPI) -> list[APIRouter]:
    return [
        meta.router(api, server),
        runs.router(api),
        approvals.router(api),
        escalations.router(api),
        reviews.router(api),
        workers.router(api),
        memory.router(api),
        users.router(api),
    ]
