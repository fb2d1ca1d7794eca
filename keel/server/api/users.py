"""`/api/v1/users` (admins): list, add (the token shown once), remove, rotate a token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, Field

from keel.errors import ConfigError, Conflict
from keel.server.api.base import Api
from keel.server.auth import ROLES, User, name_problem
from keel.server.identity import Identity


class NewUser(BaseModel):
    name: str = Field(description="1-200 characters without whitespace or control characters")
    role: str = Field(description="viewer, reviewer or admin")
    groups: list[str] = Field(default_factory=list, description="Queues they may decide (*: all)")


def router(api: Api) -> APIRouter:
    r = api.router("/users", read="admin", write="admin")
    identity = Identity(api.app)

    async def known_user(name: str) -> User:
        found = await identity.get(name)
        if found is None:
            raise HTTPException(404, f"no user {name!r}")
        return found

    @r.get("")
    async def list_users() -> list[dict[str, Any]]:
        return [
            {"name": u.name, "role": u.role, "groups": list(u.groups), "created_at": u.created_at}
            for u in await identity.list()
        ]

    @r.post("", status_code=201)
    async def create_user(body: NewUser, user: User = Depends(api.user)) -> dict[str, Any]:
        if body.role not in ROLES:
            raise HTTPException(422, f"unknown role {body.role!r}; use one of {', '.join(ROLES)}")
        problem = name_problem(body.name)
        if problem is not None:
            raise HTTPException(422, problem)
        groups = [g.strip() for g in body.groups if g.strip()]
        if await identity.get(body.name) is not None:
            raise HTTPException(409, f"user {body.name!r} already exists")
        try:
            token = await identity.add(body.name, body.role, groups, by=user.name)
        except Conflict as exc:  # created meanwhile by someone else
            raise HTTPException(409, exc.message) from None
        except ConfigError as exc:
            raise HTTPException(422, exc.message) from None
        return {"name": body.name, "role": body.role, "groups": groups, "token": token}

    @r.delete("/{name:keel_id}", status_code=204, response_class=Response)
    async def delete_user(name: str, user: User = Depends(api.user)) -> Response:
        await known_user(name)
        try:
            await identity.remove(name, by=user.name)
        except ConfigError:  # removed meanwhile
            raise HTTPException(404, f"no user {name!r}") from None
        return Response(status_code=204)

    @r.post("/{name:keel_id}/token")
    async def new_user_token(name: str, user: User = Depends(api.user)) -> dict[str, Any]:
        found = await known_user(name)
        try:
            token = await identity.rotate(name, by=user.name)
        except ConfigError:
            raise HTTPException(404, f"no user {name!r}") from None
        return {"name": name, "role": found.role, "groups": list(found.groups), "token": token}

    return r
