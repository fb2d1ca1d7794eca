"""Console login sessions: a random cookie value whose SHA-256 the store keeps, with a CSRF token.

The cookie holds 256 random bits; the store has only their hash, so a leaked database
cannot be replayed as a cookie. Sessions live in the store, so they survive a restart,
work across server processes, and die with their user (`keel users remove`/`rotate`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keel.server.auth import User
from keel.store import ConsoleSession

if TYPE_CHECKING:
    from keel.host import StoreHost

COOKIE = "keel_session"
LOGIN_COOKIE = "keel_login_csrf"  # double-submit token for the login form itself


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires_at: float


class Sessions:
    """Start, load and end sessions kept in the App's store, valid for `ttl` seconds
    after login. The one module on top of the App that touches console sessions.

    Example:
        sessions = Sessions(app)
        cookie, session = await sessions.start(user, client="10.0.0.7")
        assert (await sessions.load(cookie)) == session
    """

    def __init__(self, app: StoreHost, ttl: float = 12 * 3600) -> None:
        self._app = app
        self.ttl = ttl
        self._last_purge = 0.0

    async def start(self, user: User, client: str) -> tuple[str, Session]:
        """A new session for `user`: (the cookie value, the session)."""
        raw = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(user, secrets.token_urlsafe(32), now + self.ttl)
        await self._app.store.create_session(
            ConsoleSession(
                id_hash=_digest(raw),
                user=user.name,
                csrf=session.csrf,
                client=client,
                created_at=now,
                expires_at=session.expires_at,
            )
        )
        await self._purge(now)
        return raw, session

    async def load(self, raw: str | None) -> Session | None:
        if not raw or len(raw) > 128:
            return None
        row = await self._app.store.get_session(_digest(raw), time.time())
        if row is None:
            return None
        user = User(row.user, row.role or "", row.groups)
        return Session(user, row.csrf, row.expires_at)

    async def end(self, raw: str | None) -> None:
        if raw and len(raw) <= 128:
            await self._app.store.delete_session(_digest(raw))

    async def _purge(self, now: float) -> None:
        # Expired rows are harmless (load checks expiry); sweep them at most hourly.
        if now - self._last_purge > 3600:
            self._last_purge = now
            await self._app.store.purge_sessions(now)
