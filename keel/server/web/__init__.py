"""The review console's web pages, server-rendered with Jinja2 (no build step).

`mount(server, app)` adds them to the FastAPI app that also serves `/api/v1`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.app import App
from keel.server.auth import FailureLimiter
from keel.server.payloads import PayloadPolicy
from keel.server.sessions import Sessions
from keel.server.web import (
    approvals,
    drift,
    escalations,
    evals,
    inbox,
    login,
    memory,
    reviews,
    runs,
    users,
)
from keel.server.web.context import LoginRequired, Refused, Web

STATIC = Path(__file__).with_name("static")

# No inline script may run: a model reply that smuggles `<script>` past escaping still
# cannot execute. Style attributes are allowed for the trace waterfall's bar geometry.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

# Pages and posts that answer without a session; a test checks every other route refuses.
PUBLIC = frozenset({("GET", "/login"), ("POST", "/login")})
PUBLIC_PREFIXES = ("/static/",)  # GET only


def mount(
    server: FastAPI,
    app: App,
    limiter: FailureLimiter,
    *,
    max_body: int,
    payloads: PayloadPolicy,
    secure_cookies: bool = True,
    session_ttl: float = 12 * 3600,
    poll_ms: int = 2000,
    behind_proxy: bool = False,
) -> Web:
    """Add the console's pages and static files to `server`."""
    web = Web(
        app, Sessions(app, session_ttl), limiter,
        secure_cookies=secure_cookies, poll_ms=poll_ms, max_body=max_body,
        behind_proxy=behind_proxy, payloads=payloads,
    )
    for router in (
        login.router(web),
        login.logout_router(web),
        inbox.router(web),
        approvals.router(web),
        escalations.router(web),
        runs.router(web),
        reviews.router(web),
        evals.router(web),
        memory.router(web),
        drift.router(web),
        users.router(web),
    ):
        server.include_router(router)
    server.mount("/static", StaticFiles(directory=STATIC), name="static")

    @server.exception_handler(LoginRequired)
    async def login_required(request: Request, _: LoginRequired) -> Response:
        return web.signed_out(request)

    @server.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return web.error(request, exc.status, exc.message)
    return web


class SecurityHeaders:
    """ASGI middleware: every response carries `HEADERS` (unless it set its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in HEADERS.items():
                    if key not in headers:
                        headers[key] = value
            await send(message)

        await self.app(scope, receive, with_headers)
