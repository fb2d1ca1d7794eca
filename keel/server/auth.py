"""Console users, API tokens and the failed-login rate limit.

Tokens look like `keel_<token id>_<secret>`: the id finds the user, the secret
(`secrets.token_urlsafe(32)`, 256 random bits) is checked against a salted SHA-256
hash with a constant-time compare. The raw token is shown once, never stored.
A slow KDF adds nothing for a 256-bit random secret, so SHA-256 keeps each request cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from keel._ids import id_problem
from keel.errors import ConfigError
from keel.store import Store
from keel.store import User as StoredUser

ROLES = ("viewer", "reviewer", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}
_PREFIX = "keel_"


@dataclass(frozen=True)
class User:
    """A console user as the server sees them (no token material)."""

    name: str
    role: str
    groups: tuple[str, ...] = ()
    created_at: float | None = field(default=None, compare=False)

    def at_least(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]

    def may_decide(self, queue: str) -> bool:
        """Admins decide any queue; reviewers only the queues in their groups (`*`: all)."""
        if self.role == "admin":
            return True
        return self.role == "reviewer" and ("*" in self.groups or queue in self.groups)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "groups": list(self.groups)}


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a user's name, or None (the rule is `keel._ids.RULE`)."""
    if not name.strip():
        return "a user needs a name"
    return id_problem(name, "user name")


def _hash(secret: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """A fresh token: (raw token to show once, token id, stored `sha256$salt$digest`)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return f"{_PREFIX}{token_id}_{secret}", token_id, f"sha256${salt}${_hash(secret, salt)}"


def _split(token: str) -> tuple[str, str] | None:
    if not token.startswith(_PREFIX):
        return None
    token_id, sep, secret = token[len(_PREFIX) :].partition("_")
    if not sep or len(token_id) != 16 or not secret:
        return None
    return token_id, secret


def _matches(secret: str, stored: str) -> bool:
    algo, _, rest = stored.partition("$")
    salt, _, digest = rest.partition("$")
    if algo != "sha256" or not salt or not digest:
        return False
    return hmac.compare_digest(_hash(secret, salt), digest)


async def add_user(
    store: Store,
    name: str,
    role: str,
    groups: list[str] | None = None,
    now: float | None = None,
    by: str = "cli",
) -> str:
    """Create a user and return their API token (the only time it is available)."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    problem = name_problem(name)
    if problem is not None:
        raise ConfigError(problem)
    token, token_id, token_hash = new_token()
    await store.add_user(
        StoredUser(
            name=name,
            role=role,
            token_id=token_id,
            token_hash=token_hash,
            groups=tuple(g for g in (groups or []) if g),
            created_at=time.time() if now is None else now,
            by=by,
        )
    )
    return token


async def remove_user(store: Store, name: str, by: str = "cli") -> None:
    """Delete a user; their token and every console session of theirs stop working."""
    await store.remove_user(name, by)


async def rotate_token(store: Store, name: str, by: str = "cli") -> str:
    """Give a user a new API token (returned, shown once); the old one and their sessions end."""
    token, token_id, token_hash = new_token()
    await store.rotate_token(name, token_id, token_hash, by)
    return token


async def authenticate(store: Store, token: str) -> User | None:
    """The user a token belongs to, or None for any unknown or malformed token."""
    parts = _split(token)
    if parts is None:
        return None
    row = await store.user_by_token_id(parts[0])
    if row is None or not _matches(parts[1], row.token_hash):
        return None
    return User(row.name, row.role, row.groups)


@dataclass
class FailureLimiter:
    """At most `limit` failed logins per client in `window` seconds, then 429s."""

    limit: int = 10
    window: float = 60.0
    _seen: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, client: str, now: float) -> deque[float]:
        q = self._seen.setdefault(client, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._seen[client]
            q = self._seen.setdefault(client, deque())
        return q

    def retry_after(self, client: str, now: float | None = None) -> float | None:
        """Seconds until `client` may try again, or None when it is not blocked."""
        now = time.monotonic() if now is None else now
        q = self._recent(client, now)
        if len(q) < self.limit:
            return None
        return max(q[0] + self.window - now, 0.0)

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._recent(client, now).append(now)
