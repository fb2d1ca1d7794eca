"""`Identity`: the console's users and their API tokens, as the server and CLI use them.

The one place on top of the App that reads and writes users in the store, so the
routes and commands never touch the store themselves (tests/test_layers.py holds them
to it). Token minting and checking stay in `keel.server.auth`.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from keel.server.auth import User, add_user, authenticate, remove_user, rotate_token

if TYPE_CHECKING:
    from keel.host import StoreHost
    from keel.store import User as StoredUser


def _user(row: StoredUser) -> User:
    # The store's user record, narrowed to what may be shown: never the token's hash.
    return User(row.name, row.role, tuple(row.groups), row.created_at)


class Identity:
    """Console users of an App's store: list, add, remove, rotate a token, sign in.

    Example:
        identity = Identity(app)
        token = await identity.add("rita", "reviewer", ["payments"], by="cli:ada")
        assert (await identity.authenticate(token)).name == "rita"
    """

    def __init__(self, app: StoreHost) -> None:
        self._app = app

    async def list(self) -> list[User]:
        """Every user, by name (never their tokens)."""
        return [_user(row) for row in await self._app.store.list_users()]

    async def get(self, name: str) -> User | None:
        """The user called `name`, or None."""
        row = await self._app.store.get_user(name)
        return None if row is None else _user(row)

    async def add(
        self, name: str, role: str, groups: builtins.list[str] | None = None, by: str = "cli"
    ) -> str:
        """Create a user and return their API token (the only time it is available)."""
        return await add_user(self._app.store, name, role, groups, by=by)

    async def remove(self, name: str, by: str = "cli") -> None:
        """Delete a user; their token and every console session of theirs stop working."""
        await remove_user(self._app.store, name, by)

    async def rotate(self, name: str, by: str = "cli") -> str:
        """A new API token for `name` (returned, shown once); the old one and their
        sessions end."""
        return await rotate_token(self._app.store, name, by)

    async def authenticate(self, token: str) -> User | None:
        """The user a token belongs to, or None for any unknown or malformed token."""
        return await authenticate(self._app.store, token)
