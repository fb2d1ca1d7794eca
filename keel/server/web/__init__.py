"""The review console's web pages, server-rendered with Jinja2 (no build step).

`mount(server, app)` adds them to the FastAPI app that also serves `/api/v1`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from keel.app import App
from keel.server.auth import FailureLimiter
from keel.server.sessions import Sessions
from keel.server.web import approvals, escalations, inbox, login, reviews, runs, users
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
PUBLIC = {("GET", "/login"), ("POST", "/login")}


def mount(
    server: FastAPI,
    app: App,
    limiter: FailureLimiter,
    *,
    secure_cookies: bool = True,
    session_ttl: float = 12 * 3600,
    poll_ms: int = 2000,
) -> Web:
    """Add the console's pages, static files and security headers to `server`."""
    web = Web(
        app, Sessions(app.store, session_ttl), limiter,
        secure_cookies=secure_cookies, poll_ms=poll_ms,
    )
    for router in (
        login.router(web),
        login.logout_router(web),
        inbox.router(web),
        approvals.router(web),
        escalations.router(web),
        runs.router(web),
        reviews.router(web),
        users.router(web),
    ):
        server.include_router(router)
    server.mount("/static", StaticFiles(directory=STATIC), name="static")

    @server.exception_handler(LoginRequired)
    async def login_required(request: Request, _: LoginRequired) -> Response:
        if request.method in ("GET", "HEAD"):
            return web.to_login(request)
        return web.error(request, 401, "Sign in first: your session is missing or expired.")

    @server.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return web.error(request, exc.status, exc.message)

    @server.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        for key, value in HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    return web
