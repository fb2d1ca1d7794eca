"""Authentication before any request body is read, and connections closed on refusal.

FastAPI reads and parses a request's body before it resolves the route's dependencies,
so a check there comes too late to stop an anonymous 200 MB upload. `Gate` sits in
front of the routes instead: every request except the sign-in form and static files
needs a valid API token (`/api/v1/...`) or console session (everything else) before the
route, and with it the body, is reached. What it let in is left in the ASGI scope for
the routers' guards (`USER`, `SESSION`).

The size of what is then read is FastAPI's `max_body_size` (413 past it, counted as
it arrives, so chunked bodies too). `close_unread` makes any answer sent before the body
was read end the connection, so the rest of the body is never read either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.server.auth import User
from keel.server.sessions import COOKIE, Session

USER = "keel.user"  # scope key: the API token's user
SESSION = "keel.session"  # scope key: the console session


class Gate:
    """ASGI middleware: let a request through only with a token or session (or to a
    public path), never having read its body."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_prefix: str,
        public: frozenset[tuple[str, str]],
        public_prefixes: tuple[str, ...],
        token_user: Callable[[Request], Awaitable[User]],
        session: Callable[[str | None], Awaitable[Session | None]],
        signed_out: Callable[[Request], Response],
    ) -> None:
        self.app = app
        self.api_prefix = api_prefix
        self.public = public
        self.public_prefixes = public_prefixes
        self.token_user = token_user
        self.session = session
        self.signed_out = signed_out

    def _public(self, method: str, path: str) -> bool:
        method = "GET" if method == "HEAD" else method
        if (method, path) in self.public:
            return True
        return method == "GET" and path.startswith(self.public_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._public(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)  # headers and cookies only: the body stays unread
        path: str = scope["path"]
        refusal: Response | None = None
        if path == self.api_prefix or path.startswith(self.api_prefix + "/"):
            try:
                scope[USER] = await self.token_user(request)
            except HTTPException as exc:
                refusal = JSONResponse(
                    {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
                )
        else:
            found = await self.session(request.cookies.get(COOKIE))
            if found is None:
                refusal = self.signed_out(request)
            else:
                scope[SESSION] = found
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def close_unread(app: ASGIApp) -> ASGIApp:
    """Wrap `app` so that a response started before the request's body was read in full
    carries `Connection: close`: the server then stops reading the connection (a refused
    upload is never read to its end) instead of draining the body to reuse it."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await app(scope, receive, send)
            return
        done = False

        async def counted() -> Message:
            nonlocal done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not done:
                MutableHeaders(scope=message)["connection"] = "close"
            await send(message)

        await app(scope, counted, closing)

    return wrapped


def _has_body(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip() != b"0"):
            return True
    return False
