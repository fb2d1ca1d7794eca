"""Sign in with an API token (sets the session cookie) and sign out."""

from __future__ import annotations

import re
import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from keel.server.access import known_query
from keel.server.identity import Identity
from keel.server.sessions import COOKIE, LOGIN_COOKIE, same
from keel.server.web.context import Web, client_of, safe_next

LOGIN_MAX_BODY = 16 * 1024
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")  # what token_urlsafe(24) makes


def router(web: Web) -> APIRouter:
    """The sign-in form: public (it is how a session starts). See `logout_router`."""
    # Public, so its body is read before anyone is known: a token and two short fields.
    r = APIRouter(
        include_in_schema=False,
        max_body_size=min(LOGIN_MAX_BODY, web.max_body),
        dependencies=[Depends(known_query)],
    )

    def form(request: Request, status: int = 200, error: str = "", nxt: str = "") -> Response:
        # Keep the browser's token if it has one: a second form (another tab, or a stray
        # anonymous request such as /favicon.ico sent here) must not void the first.
        held = request.cookies.get(LOGIN_COOKIE, "")
        token = held if _TOKEN.fullmatch(held) else secrets.token_urlsafe(24)
        page = web.page(
            request, "login.html", status=status, error=error, next=nxt, login_csrf=token
        )
        page.set_cookie(
            LOGIN_COOKIE,
            token,
            httponly=True,
            secure=web.secure_cookies,
            samesite="strict",
            path="/login",
            max_age=3600,
        )
        return page

    @r.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "") -> Response:
        if await web.sessions.load(request.cookies.get(COOKIE)) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        return form(request, nxt=safe_next(next) if next else "")

    @r.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        client = client_of(request)
        raw = await request.form()
        fields = {k: v for k, v in raw.items() if isinstance(v, str)}
        nxt = safe_next(fields.get("next"))
        # Login CSRF: the form's token must match the cookie set with the form.
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not same(fields.get("csrf", ""), expected):
            return form(request, 403, "The sign-in form expired; please try again.", nxt)
        wait = web.limiter.retry_after(client)
        if wait is not None:
            page = form(request, 429, "Too many failed sign-ins from this address; "
                        f"try again in {int(wait) + 1} s.", nxt)
            page.headers["Retry-After"] = str(int(wait) + 1)
            return page
        user = await Identity(web.app).authenticate(fields.get("token", "").strip())
        if user is None:
            web.limiter.failed(client)
            return form(request, 401, "That token is not valid.", nxt)
        raw_session, _ = await web.sessions.start(user, client)
        done = RedirectResponse(nxt, status_code=303)
        done.set_cookie(
            COOKIE,
            raw_session,
            httponly=True,
            secure=web.secure_cookies,
            samesite="strict",
            path="/",
            max_age=int(web.sessions.ttl),
        )
        done.delete_cookie(LOGIN_COOKIE, path="/login")
        return done

    return r


def logout_router(web: Web) -> APIRouter:
    """Sign out: any signed-in user, with the form's CSRF token."""
    r = web.router(write="viewer")

    @r.post("/logout")
    async def logout(request: Request) -> Response:
        await web.sessions.end(request.cookies.get(COOKIE))
        done = RedirectResponse("/login", status_code=303)
        done.delete_cookie(COOKIE, path="/")
        return done

    return r
