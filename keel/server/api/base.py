"""What every API router shares: the App, the token check, role guards and decisions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, BeforeValidator, Field

from keel.app import App
from keel.errors import ConfigError, Conflict
from keel.presence import resume_notice
from keel.server.access import guard, known_query, needed
from keel.server.auth import FailureLimiter, User
from keel.server.gate import USER
from keel.server.identity import Identity
from keel.server.paths import ID
from keel.server.payloads import PayloadPolicy, Payloads
from keel.server.web.context import client_of

API = "/api/v1"
assert ID == "keel_id"  # importing paths registers the `{id:keel_id}` route convertor


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# Query parameters: a value outside these is refused with 422 listing the allowed ones.
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many (1-1000)")]
Name = Annotated[str, Query(min_length=1, max_length=200)]
RunStatusName = Annotated[
    Literal["pending", "running", "waiting", "succeeded", "failed", "cancelled"],
    BeforeValidator(_lower),
]
ApprovalStatus = Literal[
    "pending", "approved", "edited", "rejected", "confirmed", "corrected", "expired", "all"
]
ApprovalKind = Literal["approval", "low_confidence", "novelty"]
EscalationStatus = Literal["open", "resolved", "rejected", "all"]
ReviewStatus = Literal["pending", "correct", "incorrect", "all"]


class Note(BaseModel):
    note: str | None = None


class Reason(BaseModel):
    reason: str = Field(description="Why: required, recorded in the run's history.")


class Api:
    """The App behind the API and the checks its routers share."""

    def __init__(self, app: App, limiter: FailureLimiter, payloads: PayloadPolicy) -> None:
        self.app = app
        self.limiter = limiter
        self.payloads = payloads

    async def authenticate(self, request: Request) -> User:
        """The user of the request's bearer token: 401 without a valid one, 429 when this
        address failed too often. The gate calls it before the route (and the body)."""
        client = client_of(request)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise HTTPException(
                401,
                "authentication required: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        wait = self.limiter.retry_after(client)
        if wait is not None:
            raise HTTPException(
                429,
                "too many failed logins from this address; try again later",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        user = (
            await Identity(self.app).authenticate(token.strip())
            if scheme.lower() == "bearer"
            else None
        )
        if user is None:
            self.limiter.failed(client)
            raise HTTPException(
                401, "invalid or unknown API token", headers={"WWW-Authenticate": "Bearer"}
            )
        return user

    async def user(self, request: Request) -> User:
        """The user the gate let in (`keel.server.gate`); 401 if it did not run."""
        user = request.scope.get(USER)
        if not isinstance(user, User):
            raise HTTPException(
                401,
                "authentication required: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return user

    async def view(self, request: Request) -> Payloads:
        """How the request's user sees payloads: raw, or redacted (`keel.server.payloads`)."""
        return self.payloads.of(await self.user(request))

    def router(
        self, prefix: str = "", *, read: str = "viewer", write: str = "reviewer"
    ) -> APIRouter:
        """A router under `/api/v1` whose every route needs a token, and `read` (GET) or
        `write` (any other method) as the least role."""

        @guard
        async def access(request: Request, user: User = Depends(self.user)) -> User:
            role = needed(request.method, read, write)
            if not user.at_least(role):
                raise HTTPException(403, f"{user.name} is a {user.role}; this needs {role}")
            return user

        return APIRouter(prefix=API + prefix, dependencies=[Depends(access), Depends(known_query)])

    async def decide(
        self, user: User, queue: str, status: str, what: str, act: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Run a decision `act` for `user`: 403 outside their queues, 409 once decided."""
        if not user.may_decide(queue):
            raise HTTPException(
                403,
                f"{user.name} may not decide queue {queue!r} (groups: "
                f"{', '.join(user.groups) or 'none'})",
            )
        if status not in ("pending", "open"):
            raise HTTPException(409, f"{what} is already {status}; a decision is final")
        try:
            return await act()
        except Conflict as exc:  # decided by someone else meanwhile
            raise HTTPException(409, exc.message) from None
        except ConfigError as exc:  # e.g. not among the App's reviewers for this queue
            raise HTTPException(403, exc.message) from None

    async def notice(self, run_id: str, then: str = "resumes") -> dict[str, Any]:
        """`worker_live` and a one-line `message`: will a live worker take on the run that
        was waiting on what was just decided?"""
        return (await resume_notice(self.app, run_id, then, decided=True)).as_json()
