"""The checks every route is built with, shared by the JSON API and the console pages.

Routers are made with their guard as a router-level dependency (`APIRouter(dependencies=
[...])`), so a route added to one cannot leave the check out; `endpoints(server)` tells
a test which routes carry one. The role a request needs follows its method: reads
(`GET`, `HEAD`) need the router's `read` role, everything else its `write` role.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, iter_route_contexts

from keel.server.auth import User

F = TypeVar("F", bound=Callable[..., Any])

READS = frozenset({"GET", "HEAD", "OPTIONS"})
_MARK = "__keel_guard__"


def guard(check: F) -> F:
    """Mark `check` as an authentication-and-role guard (what `endpoints` looks for)."""
    setattr(check, _MARK, True)
    return check


def needed(method: str, read: str, write: str) -> str:
    """The role a request with this method needs."""
    return read if method.upper() in READS else write


def may_decide(user: User, queue: str, reviewers: Mapping[str, Collection[str]]) -> bool:
    """Role and groups (`keel users`), then the App's own reviewer list for the queue
    (`App(reviewers=...)`, `[keel.reviewers]`): what a decision of `user`'s will pass."""
    if not user.may_decide(queue):
        return False
    group = reviewers.get(queue)
    return group is None or user.name in group


async def known_query(request: Request) -> None:
    """Refuse query parameters the route does not take (422 naming them and the ones it
    does): a mistyped filter must not quietly list everything."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    takes = {p.alias for d in _dependants(route.dependant) for p in d.query_params}
    unknown = sorted(set(request.query_params) - takes)
    if unknown:
        hint = f"this route takes {', '.join(sorted(takes))}" if takes else "this route takes none"
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": f"unknown query parameter; {hint}",
                    "input": request.query_params.get(name),
                }
                for name in unknown
            ]
        )


@dataclass(frozen=True)
class Endpoint:
    """One method and path the app serves, and whether a guard runs before its handler."""

    method: str
    path: str  # as documented: `/api/v1/runs/{run_id}`
    pattern: str  # as routed, with convertors: `/api/v1/runs/{run_id:keel_id}`
    guarded: bool


def endpoints(server: FastAPI) -> list[Endpoint]:
    """Every route of `server` (included routers flattened; mounts such as `/static` left
    out), so a test can hold each one to its check."""
    out: list[Endpoint] = []
    for route in iter_route_contexts(server.routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        calls = [getattr(d.call, "__func__", d.call) for d in _dependants(route.dependant)]
        marked = any(getattr(c, _MARK, False) for c in calls)
        for method in sorted(route.methods or ()):
            out.append(Endpoint(method, str(route.path_format), str(route.path), marked))
    return out


def _dependants(root: Any) -> list[Any]:
    """`root` and every dependency under it."""
    found: list[Any] = []
    stack = [root]
    while stack:
        dep = stack.pop()
        found.append(dep)
        stack.extend(dep.dependencies)
    return found
