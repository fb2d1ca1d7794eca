"""`create_app(keel_app)`: the review console: web pages at `/`, the JSON API at `/api/v1`.

Every route, the OpenAPI spec included, needs a session (pages) or an API token (API).
Viewers read; reviewers decide in their groups' queues; admins decide anywhere and manage.
The routes live in one router per resource (`keel.server.api`, `keel.server.web`), each
built with its access check as a router-level dependency.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from keel.app import App
from keel.errors import InputError, RunNotFound
from keel.server.api import API, Api, routers
from keel.server.auth import FailureLimiter
from keel.server.web import mount


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
    server = FastAPI(
        title="Keel review console API",
        version="1",
        openapi_url=None,  # served at /api/v1/openapi.json, behind authentication
        docs_url=None,
        redoc_url=None,
    )
    web = mount(
        server,
        keel_app,
        limiter,
        secure_cookies=secure_cookies,
        session_ttl=session_ttl,
        poll_ms=poll_ms,
    )
    for router in routers(Api(keel_app, limiter), server):
        server.include_router(router)

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

    return server
