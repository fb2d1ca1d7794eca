"""`create_app(keel_app)`: the review console: web pages at `/`, the JSON API at `/api/v1`.

Every route, the OpenAPI spec included, needs a session (pages) or an API token (API).
Viewers read; reviewers decide in their groups' queues; admins decide anywhere and manage.
The routes live in one router per resource (`keel.server.api`, `keel.server.web`), each
built with its access check as a router-level dependency.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from keel.app import App
from keel.errors import InputError, PayloadUnreadable, RunNotFound, StoreError
from keel.server.api import API, Api, routers
from keel.server.auth import FailureLimiter
from keel.server.gate import Gate, close_unread
from keel.server.paths import keep_segments
from keel.server.payloads import PayloadPolicy
from keel.server.settings import ServeSettings
from keel.server.web import PUBLIC, PUBLIC_PREFIXES, SecurityHeaders, mount


class _Server(FastAPI):
    """FastAPI with two wrappers outside everything, its own body limit included:
    `keep_segments` (ids with `/` route as one segment) and `close_unread` (a refusal
    ends the connection, FastAPI's 413 too)."""

    def build_middleware_stack(self) -> ASGIApp:
        return close_unread(keep_segments(super().build_middleware_stack()))


def create_app(
    keel_app: App,
    *,
    failure_limit: int = 10,
    failure_window: float = 60.0,
    secure_cookies: bool = True,
    session_ttl: float = 12 * 3600,
    poll_ms: int = 2000,
    max_body: int | str | None = None,
    forwarded_allow_ips: str | Sequence[str] | None = None,
    raw_payloads: str | Sequence[str] | None = None,
) -> FastAPI:
    """The review console over `keel_app`'s store: web pages at `/`, JSON API at `/api/v1`.

    `keel serve` runs it under Uvicorn. Session cookies are `Secure` unless
    `secure_cookies=False` (plain HTTP beyond localhost, e.g. behind a TLS proxy
    that does not forward the scheme, still sets them: browsers only send them over HTTPS).

    `max_body` (bytes, or e.g. "4MiB"), `forwarded_allow_ips` and `raw_payloads` default
    to keel.toml / `KEEL_*` (`keel.server.settings`): bodies above 1 MiB get 413, no proxy
    headers are believed, and viewers see payloads redacted.
    """
    settings = ServeSettings.load(
        max_body=max_body, forwarded_allow_ips=forwarded_allow_ips, raw_payloads=raw_payloads
    )
    limiter = FailureLimiter(failure_limit, failure_window)
    payloads = PayloadPolicy(keel_app, settings.raw_payloads)
    server = _Server(
        title="Keel review console API",
        version="1",
        openapi_url=None,  # served at /api/v1/openapi.json, behind authentication
        docs_url=None,
        redoc_url=None,
        max_body_size=settings.max_body,
    )
    web = mount(
        server,
        keel_app,
        limiter,
        secure_cookies=secure_cookies,
        session_ttl=session_ttl,
        poll_ms=poll_ms,
        max_body=settings.max_body,
        behind_proxy=bool(settings.forwarded_allow_ips),
        payloads=payloads,
    )
    api = Api(keel_app, limiter, payloads)
    for router in routers(api, server):
        server.include_router(router)

    # Middleware, innermost first: the gate, then security headers (so the gate's refusals
    # carry them too), then the proxy headers, so the gate's rate limit sees the client
    # behind a trusted proxy, and nobody else's X-Forwarded-For.
    server.add_middleware(
        Gate,
        api_prefix=API,
        public=PUBLIC,
        public_prefixes=PUBLIC_PREFIXES,
        token_user=api.authenticate,
        session=web.sessions.load,
        signed_out=web.signed_out,
    )
    server.add_middleware(SecurityHeaders)
    if settings.forwarded_allow_ips:
        server.add_middleware(
            ProxyHeadersMiddleware, trusted_hosts=list(settings.forwarded_allow_ips)
        )

    def refusal(
        request: Request, status: int, message: str, problems: list[str] | None = None
    ) -> Response:
        """An error page for the console; for the API `{"detail"}`, and with `problems`
        (`["field: why", ...]`) those and the `fields` they name: one shape for every 422."""
        if not request.url.path.startswith(API):
            return web.error(request, status, message)
        body: dict[str, Any] = {"detail": message}
        if problems is not None:
            body["problems"] = problems
            body["fields"] = sorted({p.split(":", 1)[0].strip() for p in problems if ":" in p})
        return JSONResponse(body, status_code=status)

    @server.exception_handler(RunNotFound)
    async def not_found(request: Request, exc: RunNotFound) -> Response:
        return refusal(request, 404, exc.message)

    @server.exception_handler(InputError)
    async def invalid(request: Request, exc: InputError) -> Response:
        return refusal(request, 422, exc.message, list(exc.data.get("problems") or []))

    @server.exception_handler(PayloadUnreadable)
    async def no_key(request: Request, exc: PayloadUnreadable) -> Response:
        # This server lacks a key the stored payloads need (docs/encryption.md): say
        # which, rather than a bare 500.
        return refusal(request, 503, exc.message)

    @server.exception_handler(StoreError)
    async def store_down(request: Request, exc: StoreError) -> Response:
        # The store failed (locked, full, unreachable): nothing was written; say so and
        # what to do, rather than a bare 500. The caller retries once it is back.
        return refusal(request, 503, f"{exc.message}. Nothing was written: retry")

    @server.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # Query parameters and bodies FastAPI refused: the same shape as InputError's.
        problems = [f"{_where(e)}: {e['msg']}" for e in exc.errors()]
        return refusal(request, 422, "; ".join(problems), problems)

    return server


def _where(error: Any) -> str:
    """The field an error is about: `status` for ("query", "status"), `body` for bad JSON."""
    loc = [str(part) for part in error.get("loc", ())]
    if error.get("type") == "json_invalid" or len(loc) < 2:
        return loc[0] if loc else "request"
    return ".".join(loc[1:])
