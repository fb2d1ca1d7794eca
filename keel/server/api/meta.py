"""`/api/v1/me` and `/api/v1/openapi.json` (the spec, behind a token like the rest)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from keel.server.api.base import Api
from keel.server.auth import User


def router(api: Api, server: FastAPI) -> APIRouter:
    r = api.router()

    @r.get("/openapi.json", include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return server.openapi()

    @r.get("/me")
    async def me(user: User = Depends(api.user)) -> dict[str, Any]:
        return user.public()

    return r
