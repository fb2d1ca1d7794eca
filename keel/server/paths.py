"""Ids in URL paths: each one is a single percent-encoded path segment, whatever it holds.

Run ids, user names and especially review and escalation ids (which embed step keys:
`r1:map:send#0/3/approval:mail#0`) may hold `/`, `?`, `#`, `%`, spaces are refused
(`keel._ids`). ASGI servers decode the path before routing, so `/approvals/a%2Fb/approve`
would reach the router as `/approvals/a/b/approve`, and no route pattern could tell the
id from the action. `keep_segments` re-derives the path from the raw request bytes with
each segment's own `/` and `%` still encoded; routes capture ids with `{name:keel_id}`
(one segment, decoded); links are built with `url_id`.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, unquote_to_bytes

from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send

ID = "keel_id"  # the path convertor: `/runs/{run_id:keel_id}`


def url_id(value: str) -> str:
    """`value` as one URL path segment: `r1:approval:refund#0` -> `r1:approval:refund%230`."""
    return quote(str(value), safe="")


class _IdConvertor(Convertor[str]):
    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return url_id(value)


register_url_convertor(ID, _IdConvertor())


def _segment(raw: bytes) -> str:
    text = unquote_to_bytes(raw).decode("utf-8", errors="replace")
    return text.replace("%", "%25").replace("/", "%2F")


def routing_path(scope: Scope) -> str:
    """The path with every segment decoded except its own `%` and `/`."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        return "/".join(_segment(part) for part in raw.split(b"?", 1)[0].split(b"/"))
    # No raw path from this server: a `/` inside an id is lost, but `%` still round-trips.
    return str(scope["path"]).replace("%", "%25")


def keep_segments(app: ASGIApp) -> ASGIApp:
    """Wrap `app` so it routes on `routing_path` (see the module's docstring)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["path"] = routing_path(scope)
        await app(scope, receive, send)

    return wrapped
