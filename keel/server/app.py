"""`create_app(keel_app)`: the versioned JSON API (`/api/v1`) of the review console.

Every route, the OpenAPI spec included, requires `Authorization: Bearer <token>`.
Viewers read; reviewers decide in their groups' queues; admins decide anywhere and manage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from keel.app import App
from keel.errors import ConfigError, InputError, RunNotFound
from keel.hitl.api import DECISION_KINDS, ReviewRequest
from keel.presence import live_workers, resume_notice
from keel.server.auth import (
    ROLES,
    FailureLimiter,
    User,
    add_user,
    authenticate,
    remove_user,
    rotate_token,
)
from keel.server.timeparse import parse_time
from keel.server.web import mount
from keel.server.web.context import client_of

API = "/api/v1"


class Note(BaseModel):
    note: str | None = None


class Reason(BaseModel):
    reason: str = Field(description="Why: required, recorded in the run's history.")


class Edit(BaseModel):
    args: dict[str, Any]
    note: str | None = None


class Resolution(BaseModel):
    result: Any = None
    note: str | None = None


class Verdict(BaseModel):
    correct: bool
    label: Any = None
    note: str | None = None


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: str = Field(description="viewer, reviewer or admin")
    groups: list[str] = Field(default_factory=list, description="Queues they may decide (*: all)")



def _span(span: Any) -> dict[str, Any]:
    out = dataclasses.asdict(span)
    for key in ("span_id", "trace_id", "parent_id"):
        if isinstance(out.get(key), int):
            out[key] = f"{out[key]:x}"
    out["links"] = [f"{x:x}" if isinstance(x, int) else x for x in out.get("links") or []]
    return out


def _review(req: ReviewRequest) -> dict[str, Any]:
    return {**req.summary(), "step": req.step, "request": req.request, "decided_at": req.decided_at}


def create_app(
    keel_app: App,
    *,
    failure_limit: int = 10,
    failure_window: float = 60.0,
    secure_cookies: bool = True,
    session_ttl: float = 12 * 3600,
    poll_ms: int = 2000,
) -> FastAPI:
    """The review console over `keel_app`'s store: web pages at `/`, JSON API at `/api/v1`.

    `keel serve` runs it under Uvicorn. Session cookies are `Secure` unless
    `secure_cookies=False` (plain HTTP beyond localhost, e.g. behind a TLS proxy
    that does not forward the scheme, still sets them: browsers only send them over HTTPS).
    """
    limiter = FailureLimiter(failure_limit, failure_window)

    async def current_user(request: Request) -> User:
        client = client_of(request)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise HTTPException(
                401,
                "authentication required: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        wait = limiter.retry_after(client)
        if wait is not None:
            raise HTTPException(
                429,
                "too many failed logins from this address; try again later",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        user = (
            await authenticate(keel_app.store, token.strip())
            if scheme.lower() == "bearer"
            else None
        )
        if user is None:
            limiter.failed(client)
            raise HTTPException(
                401, "invalid or unknown API token", headers={"WWW-Authenticate": "Bearer"}
            )
        return user

    def role(needed: str) -> Callable[[User], Awaitable[User]]:
        async def check(user: User = Depends(current_user)) -> User:
            if not user.at_least(needed):
                raise HTTPException(403, f"{user.name} is a {user.role}; this needs {needed}")
            return user

        return check

    viewer = Depends(role("viewer"))
    reviewer = Depends(role("reviewer"))
    admin = Depends(role("admin"))

    server = FastAPI(
        title="Keel review console API",
        version="1",
        openapi_url=None,  # served below, behind authentication
        docs_url=None,
        redoc_url=None,
    )
    # Each API route takes its user from a role dependency built on `current_user`, so a
    # valid token comes first everywhere (a test enumerates the routes to keep it so).
    api = server

    web = mount(
        server,
        keel_app,
        limiter,
        secure_cookies=secure_cookies,
        session_ttl=session_ttl,
        poll_ms=poll_ms,
    )

    @server.exception_handler(RunNotFound)
    async def not_found(request: Request, exc: RunNotFound) -> Response:
        if not request.url.path.startswith(API):
            return web.error(request, 404, exc.message)
        return JSONResponse({"detail": exc.message}, status_code=404)

    @server.exception_handler(InputError)
    async def invalid(request: Request, exc: InputError) -> Response:
        if not request.url.path.startswith(API):
            return web.error(request, 422, exc.message)
        found = list(exc.data.get("problems") or [])
        fields = sorted({p.split(":", 1)[0].strip() for p in found if ":" in p})
        return JSONResponse(
            {"detail": exc.message, "problems": found, "fields": fields}, status_code=422
        )

    @api.get(API + "/openapi.json", include_in_schema=False)
    async def openapi(user: User = viewer) -> dict[str, Any]:
        return server.openapi()

    @api.get(API + "/me")
    async def me(user: User = viewer) -> dict[str, Any]:
        return user.public()

    # -- runs and traces ----------------------------------------------------------

    @api.get(API + "/runs")
    async def list_runs(
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        since: str | None = None,
        until: str | None = None,
        user: User = viewer,
    ) -> list[dict[str, Any]]:
        start = None if since is None else parse_time(since, "since")
        end = None if until is None else parse_time(until, "until")
        try:
            runs = await keel_app.list_runs(
                status, workflow, min(max(limit, 1), 1000), since=start, until=end
            )
        except ValueError:
            raise HTTPException(422, f"unknown status {status!r}") from None
        return [r.summary() for r in runs]

    @api.get(API + "/runs/{run_id}")
    async def get_run(run_id: str, user: User = viewer) -> dict[str, Any]:
        info = await keel_app.get_run(run_id)
        steps = await keel_app.steps(run_id)
        return {
            "run": info.model_dump(mode="json"),
            "journal": [s.model_dump(mode="json") for s in steps],
        }

    @api.get(API + "/runs/{run_id}/trace")
    async def get_trace(run_id: str, user: User = viewer) -> dict[str, Any]:
        return {"run_id": run_id, "spans": [_span(s) for s in await keel_app.trace(run_id)]}

    # -- approvals ----------------------------------------------------------------

    async def decision_request(review_id: str) -> ReviewRequest:
        req: ReviewRequest = await keel_app.approvals.get(review_id)
        if req.kind not in DECISION_KINDS:
            raise RunNotFound(f"no approval {review_id!r}; it is a {req.kind} review")
        return req

    def may_decide(user: User, queue: str) -> None:
        if not user.may_decide(queue):
            raise HTTPException(
                403,
                f"{user.name} may not decide queue {queue!r} (groups: "
                f"{', '.join(user.groups) or 'none'})",
            )

    async def decide(
        user: User, queue: str, status: str, what: str, act: Callable[[], Awaitable[Any]]
    ) -> Any:
        may_decide(user, queue)
        if status not in ("pending", "open"):
            raise HTTPException(409, f"{what} is already {status}; a decision is final")
        try:
            return await act()
        except ConfigError as exc:
            code = 409 if "already" in exc.message else 403
            raise HTTPException(code, exc.message) from None

    async def notice(run_id: str, then: str = "resumes") -> dict[str, Any]:
        """`worker_live` and a one-line `message`: will a live worker take the run on?"""
        return (await resume_notice(keel_app, run_id, then)).as_json()

    @api.get(API + "/approvals")
    async def list_approvals(
        queue: str | None = None,
        status: str = "pending",
        kind: str | None = None,
        limit: int = 100,
        user: User = viewer,
    ) -> dict[str, Any]:
        try:
            found = await keel_app.approvals.list(queue, status, kind, min(max(limit, 1), 1000))
        except ConfigError as exc:
            raise HTTPException(422, exc.message) from None
        queues: dict[str, list[dict[str, Any]]] = {}
        for req in found:
            queues.setdefault(req.queue, []).append(req.summary())
        return {"queues": queues, "count": len(found)}

    @api.get(API + "/approvals/{review_id}")
    async def get_approval(review_id: str, user: User = viewer) -> dict[str, Any]:
        req = await decision_request(review_id)
        return {
            **_review(req),
            "audit": await keel_app.approvals.audit(review_id),
            "can_decide": req.status == "pending" and user.may_decide(req.queue),
        }

    @api.post(API + "/approvals/{review_id}/approve")
    async def approve(review_id: str, body: Note, user: User = reviewer) -> dict[str, Any]:
        req = await decision_request(review_id)
        done = await decide(
            user,
            req.queue,
            req.status,
            f"{req.kind} {req.id}",
            lambda: keel_app.approvals.approve(review_id, by=user.name, note=body.note),
        )
        return {**_review(done), **await notice(done.run_id)}

    @api.post(API + "/approvals/{review_id}/reject")
    async def reject(review_id: str, body: Reason, user: User = reviewer) -> dict[str, Any]:
        req = await decision_request(review_id)
        done = await decide(
            user,
            req.queue,
            req.status,
            f"{req.kind} {req.id}",
            lambda: keel_app.approvals.reject(review_id, body.reason, by=user.name),
        )
        return {**_review(done), **await notice(done.run_id, "continues with the rejection")}

    @api.post(API + "/approvals/{review_id}/edit")
    async def edit(review_id: str, body: Edit, user: User = reviewer) -> dict[str, Any]:
        req = await decision_request(review_id)
        done = await decide(
            user,
            req.queue,
            req.status,
            f"{req.kind} {req.id}",
            lambda: keel_app.approvals.edit(review_id, body.args, by=user.name, note=body.note),
        )
        return {**_review(done), **await notice(done.run_id)}

    # -- escalations --------------------------------------------------------------

    @api.get(API + "/escalations")
    async def list_escalations(
        status: str = "open", queue: str | None = None, limit: int = 100, user: User = viewer
    ) -> list[dict[str, Any]]:
        try:
            found = await keel_app.escalations.list(status, queue, min(max(limit, 1), 1000))
        except ConfigError as exc:
            raise HTTPException(422, exc.message) from None
        return [e.model_dump(mode="json") for e in found]

    @api.get(API + "/escalations/{escalation_id}")
    async def get_escalation(escalation_id: str, user: User = viewer) -> dict[str, Any]:
        esc = await keel_app.escalations.get(escalation_id)
        out: dict[str, Any] = esc.model_dump(mode="json")
        return out

    @api.post(API + "/escalations/{escalation_id}/resolve")
    async def resolve(
        escalation_id: str, body: Resolution, user: User = reviewer
    ) -> dict[str, Any]:
        esc = await keel_app.escalations.get(escalation_id)
        done = await decide(
            user,
            esc.queue,
            esc.status,
            f"escalation {esc.id}",
            lambda: keel_app.escalations.resolve(
                escalation_id, body.result, by=user.name, note=body.note
            ),
        )
        out: dict[str, Any] = done.model_dump(mode="json")
        return {**out, **await notice(done.run_id)}

    @api.post(API + "/escalations/{escalation_id}/reject")
    async def reject_escalation(
        escalation_id: str, body: Reason, user: User = reviewer
    ) -> dict[str, Any]:
        esc = await keel_app.escalations.get(escalation_id)
        done = await decide(
            user,
            esc.queue,
            esc.status,
            f"escalation {esc.id}",
            lambda: keel_app.escalations.reject(escalation_id, body.reason, by=user.name),
        )
        out: dict[str, Any] = done.model_dump(mode="json")
        return {**out, **await notice(done.run_id, "continues with the failure")}

    # -- sampled reviews ----------------------------------------------------------

    async def sample(review_id: str) -> ReviewRequest:
        req: ReviewRequest = await keel_app.reviews.get(review_id)
        if req.kind != "sample":
            raise RunNotFound(f"no sampled review {review_id!r}; it is a {req.kind} request")
        return req

    @api.get(API + "/reviews")
    async def list_reviews(
        status: str = "pending",
        workflow: str | None = None,
        limit: int = 100,
        user: User = viewer,
    ) -> list[dict[str, Any]]:
        found = await keel_app.reviews.list(status, workflow, min(max(limit, 1), 1000))
        return [_review(r) for r in found]

    @api.get(API + "/reviews/{review_id}")
    async def get_sample(review_id: str, user: User = viewer) -> dict[str, Any]:
        return _review(await sample(review_id))

    @api.post(API + "/reviews/{review_id}/verdict")
    async def verdict(review_id: str, body: Verdict, user: User = reviewer) -> dict[str, Any]:
        req = await sample(review_id)
        done = await decide(
            user,
            req.queue,
            req.status,
            f"sampled review {req.id}",
            lambda: keel_app.reviews.verdict(
                review_id, body.correct, by=user.name, label=body.label, note=body.note
            ),
        )
        return _review(done)

    # -- workers --------------------------------------------------------------------

    @api.get(API + "/workers")
    async def list_workers(user: User = viewer) -> list[dict[str, Any]]:
        """Live workers: who will resume decided runs (see `keel workers`)."""
        return [
            {**dataclasses.asdict(w), "workflows": list(w.workflows)}
            for w in await live_workers(keel_app)
        ]

    # -- administration -----------------------------------------------------------

    @api.get(API + "/users")
    async def list_users(user: User = admin) -> list[dict[str, Any]]:
        rows = await keel_app.store.list_users()
        return [
            {
                "name": r["name"],
                "role": r["role"],
                "groups": r["groups"],
                "created_at": r["created_at"],
            }
            for r in rows
        ]

    @api.post(API + "/users", status_code=201)
    async def create_user(body: NewUser, user: User = admin) -> dict[str, Any]:
        if body.role not in ROLES:
            raise HTTPException(422, f"unknown role {body.role!r}; use one of {', '.join(ROLES)}")
        if not body.name.strip():
            raise HTTPException(422, "a user needs a name")
        groups = [g.strip() for g in body.groups if g.strip()]
        if await keel_app.store.get_user(body.name) is not None:
            raise HTTPException(409, f"user {body.name!r} already exists")
        try:
            token = await add_user(keel_app.store, body.name, body.role, groups, by=user.name)
        except ConfigError as exc:
            code = 409 if "already exists" in exc.message else 422
            raise HTTPException(code, exc.message) from None
        return {"name": body.name, "role": body.role, "groups": groups, "token": token}

    async def known_user(name: str) -> dict[str, Any]:
        row = await keel_app.store.get_user(name)
        if row is None:
            raise HTTPException(404, f"no user {name!r}")
        return row

    @api.delete(API + "/users/{name}", status_code=204, response_class=Response)
    async def delete_user(name: str, user: User = admin) -> Response:
        await known_user(name)
        try:
            await remove_user(keel_app.store, name, by=user.name)
        except ConfigError:  # removed meanwhile
            raise HTTPException(404, f"no user {name!r}") from None
        return Response(status_code=204)

    @api.post(API + "/users/{name}/token")
    async def new_user_token(name: str, user: User = admin) -> dict[str, Any]:
        row = await known_user(name)
        try:
            token = await rotate_token(keel_app.store, name, by=user.name)
        except ConfigError:
            raise HTTPException(404, f"no user {name!r}") from None
        return {"name": name, "role": row["role"], "groups": row["groups"], "token": token}

    return server
