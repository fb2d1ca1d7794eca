"""What every console page shares: the session, CSRF checks, rendering and refusals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from keel.app import App
from keel.errors import RunNotFound
from keel.server.access import READS, guard, known_query, may_decide, needed
from keel.server.auth import FailureLimiter, User
from keel.server.gate import SESSION
from keel.server.paths import ID
from keel.server.payloads import PayloadPolicy
from keel.server.sessions import Session, Sessions, same
from keel.server.web.format import FILTERS
from keel.types import RunInfo

TEMPLATES = Path(__file__).with_name("templates")
assert ID == "keel_id"  # importing paths registers the `{id:keel_id}` route convertor
_POSTED = "keel.posted"  # scope key: the checked form, read once per request


class LoginRequired(Exception):
    """No valid session: pages redirect to the login form, posts are refused."""


class Refused(Exception):
    """A request the console turns down, shown as a page with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Posted:
    """A state-changing form that passed the session and CSRF checks."""

    session: Session
    form: dict[str, str]

    @property
    def user(self) -> User:
        return self.session.user

    def text(self, name: str) -> str:
        return self.form.get(name, "").strip()


def client_of(request: Request) -> str:
    """The client's address, the key of the failed-sign-in limit (pages and API alike)."""
    return request.client.host if request.client else "unknown"


def safe_next(target: str | None) -> str:
    """Only same-site paths: `//evil.example` and absolute URLs fall back to the inbox."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/inbox"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/inbox"
    return target


class Web:
    """Sessions, rendering and the checks each page route depends on."""

    def __init__(
        self,
        app: App,
        sessions: Sessions,
        limiter: FailureLimiter,
        *,
        max_body: int,
        payloads: PayloadPolicy,
        secure_cookies: bool = True,
        poll_ms: int = 2000,
        behind_proxy: bool = False,
    ) -> None:
        self.app = app
        self.payloads = payloads
        self.max_body = max_body
        self.behind_proxy = behind_proxy
        self.sessions = sessions
        self.limiter = limiter
        self.secure_cookies = secure_cookies
        self.poll_ms = poll_ms
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(FILTERS)

    # -- dependencies ---------------------------------------------------------------

    async def session(self, request: Request) -> Session:
        """The session the gate let in (`keel.server.gate`); `LoginRequired` without one."""
        session = request.scope.get(SESSION)
        if not isinstance(session, Session):
            raise LoginRequired()
        request.state.session = session
        return session

    async def posted(self, request: Request) -> Posted:
        """A signed-in user's form, with its CSRF token and origin checked (once a request)."""
        done = request.scope.get(_POSTED)
        if isinstance(done, Posted):
            return done
        session = await self.session(request)
        origin = request.headers.get("origin")
        if origin and origin != "null":
            hosts = {request.headers.get("host", "")}
            if self.behind_proxy:  # the public host may arrive as X-Forwarded-Host
                hosts.add(request.headers.get("x-forwarded-host", ""))
            if urlsplit(origin).netloc not in hosts:
                raise Refused(403, "CSRF check failed: the form came from another site")
        raw = await request.form()
        form = {k: v for k, v in raw.items() if isinstance(v, str)}
        token = form.pop("csrf", "")
        if not token or not same(token, session.csrf):
            raise Refused(403, "CSRF check failed: reload the page and try again")
        posted = request.scope[_POSTED] = Posted(session, form)
        return posted

    def router(
        self, *, read: str = "viewer", write: str = "reviewer", refusal: str = ""
    ) -> APIRouter:
        """A router whose every page needs a session and `read` (GET) or `write` (other
        methods, which also need the form's CSRF token) as the least role; `refusal`
        completes the 403 message ("deciding needs a reviewer")."""

        @guard
        async def access(request: Request) -> Session:
            session = await self.session(request)
            if request.method not in READS:
                await self.posted(request)
            role = needed(request.method, read, write)
            user = session.user
            if not user.at_least(role):
                why = refusal or f"this needs {role}"
                raise Refused(403, f"{user.name} is a {user.role}; {why}")
            return session

        return APIRouter(
            dependencies=[Depends(access), Depends(known_query)], include_in_schema=False
        )

    # -- permissions --------------------------------------------------------------------

    async def run_or_none(self, run_id: str) -> RunInfo | None:
        """The run a request or escalation belongs to, or None when it was purged."""
        try:
            return await self.app.get_run(run_id)
        except RunNotFound:
            return None

    def may_decide(self, user: User, queue: str) -> bool:
        """Role and groups (`keel users`), then the App's own reviewer list for the queue."""
        return may_decide(user, queue, self.app.reviewers)

    def require_decider(self, user: User, queue: str) -> None:
        if not self.may_decide(user, queue):
            if not user.at_least("reviewer"):
                raise Refused(403, f"{user.name} is a {user.role}; deciding needs a reviewer")
            raise Refused(403, f"{user.name} may not decide queue {queue!r}")

    # -- responses ----------------------------------------------------------------------

    def page(
        self, request: Request, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse:
        session: Session | None = getattr(request.state, "session", None)
        html = self.env.get_template(template).render(
            user=session.user if session else None,
            raw=session is not None and self.payloads.of(session.user).raw,
            csrf=session.csrf if session else "",
            path=request.url.path,
            poll_ms=self.poll_ms,
            **values,
        )
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def fragment(self, template: str, **values: Any) -> str:
        return self.env.get_template(template).render(**values)

    def error(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.page(request, "error.html", status=status, status_code=status, message=message)

    @staticmethod
    def back(path: str) -> RedirectResponse:
        """After a successful post: see the result with a GET (post/redirect/get)."""
        return RedirectResponse(path, status_code=303)

    def signed_out(self, request: Request) -> Response:
        """The answer without a session: pages go to the sign-in form, posts are refused."""
        if request.method in ("GET", "HEAD"):
            return self.to_login(request)
        return self.error(request, 401, "Sign in first: your session is missing or expired.")

    @staticmethod
    def to_login(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
