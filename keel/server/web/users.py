"""Admins manage console users: add one (its token shown once), rotate a token, remove one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from keel.errors import ConfigError
from keel.server.auth import ROLES, name_problem
from keel.server.identity import Identity
from keel.server.web.context import Posted, Refused, Web


def router(web: Web) -> APIRouter:
    r = web.router(read="admin", write="admin", refusal="users are for admins")
    identity = Identity(web.app)

    async def show(request: Request, status: int = 200, **values: Any) -> Response:
        values.setdefault("form", {"name": "", "role": "reviewer", "groups": ""})
        values.setdefault("errors", {})
        return web.page(
            request, "users.html", status=status, users=await identity.list(),
            roles=ROLES, **values,
        )

    @r.get("/users", response_class=HTMLResponse)
    async def users(request: Request) -> Response:
        return await show(request)

    @r.post("/users", response_class=HTMLResponse)
    async def create(request: Request, posted: Posted = Depends(web.posted)) -> Response:
        form = {k: posted.text(k) for k in ("role", "groups")}
        form["name"] = posted.form.get("name", "")  # as typed: the rule is the same everywhere
        errors: dict[str, str] = {}
        problem = name_problem(form["name"])
        if problem is not None:
            errors["name"] = problem
        elif await identity.get(form["name"]) is not None:
            errors["name"] = f"{form['name']!r} already exists"
        if form["role"] not in ROLES:
            errors["role"] = f"choose one of {', '.join(ROLES)}"
        if errors:
            code = 409 if "already exists" in errors.get("name", "") else 422
            return await show(request, code, form=form, errors=errors)
        groups = [g.strip() for g in form["groups"].split(",") if g.strip()]
        try:
            token = await identity.add(form["name"], form["role"], groups,
                                       by=posted.user.name)
        except ConfigError as exc:  # created meanwhile by someone else
            return await show(request, 409, form=form, errors={"name": exc.message})
        # The token is shown in this response only: no redirect, and never cached.
        return await show(request, 201, created={"name": form["name"], "token": token})

    @r.post("/users/{name:keel_id}/rotate", response_class=HTMLResponse)
    async def rotate(request: Request, name: str, posted: Posted = Depends(web.posted)) -> Response:
        try:
            token = await identity.rotate(name, by=posted.user.name)
        except ConfigError as exc:
            raise Refused(404, exc.message) from None
        # Rotating ends every session of the user: one's own too, so they sign in again.
        created = {"name": name, "token": token, "rotated": True,
                   "self": name == posted.user.name}
        return await show(request, 200, created=created)

    @r.post("/users/{name:keel_id}/remove", response_class=HTMLResponse)
    async def remove(request: Request, name: str, posted: Posted = Depends(web.posted)) -> Response:
        if name == posted.user.name:
            raise Refused(409, "you cannot remove yourself here; another admin or "
                               "`keel users remove` can")
        if posted.text("confirm") != name:
            return await show(request, 422, errors={f"remove:{name}": "type the name to confirm"})
        try:
            await identity.remove(name, by=posted.user.name)
        except ConfigError as exc:
            raise Refused(404, exc.message) from None
        return web.back("/users")

    return r
