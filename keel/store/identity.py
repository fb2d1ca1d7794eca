"""`IdentityStore`: review-console users and their login sessions. Adding, removing and
re-keying a user is audited (`PeopleStore.audit_log`)."""

from __future__ import annotations

import abc

from keel.store.records import ConsoleSession, User


class IdentityStore(abc.ABC):
    """Users and sessions.

    Example:
        await store.add_user(User("alice", "reviewer", tid, thash, created_at=time.time()))
        user = await store.user_by_token_id(tid)
    """

    @abc.abstractmethod
    async def add_user(self, user: User) -> None:
        """Add a console user (audited as `user_added` by `user.by`, or "cli"); a name
        already taken raises `Conflict`."""

    @abc.abstractmethod
    async def get_user(self, name: str) -> User | None:
        """The user, or None."""

    @abc.abstractmethod
    async def user_by_token_id(self, token_id: str) -> User | None:
        """The user holding that token id, or None."""

    @abc.abstractmethod
    async def list_users(self) -> list[User]:
        """Every user, by name."""

    @abc.abstractmethod
    async def remove_user(self, name: str, by: str = "cli") -> None:
        """Delete a user and all their sessions at once (audited); unknown -> ConfigError."""

    @abc.abstractmethod
    async def rotate_token(
        self, name: str, token_id: str, token_hash: str, by: str = "cli"
    ) -> None:
        """Replace a user's API token (the old one stops working) and end their sessions
        (audited); unknown -> ConfigError."""

    @abc.abstractmethod
    async def create_session(self, session: ConsoleSession) -> None:
        """Store a console session (its `role` and `groups` are not stored: they come
        from its user when read)."""

    @abc.abstractmethod
    async def get_session(self, id_hash: str, now: float) -> ConsoleSession | None:
        """The live session with its user's role and groups; None if unknown, expired
        (expires_at <= now) or its user no longer exists."""

    @abc.abstractmethod
    async def delete_session(self, id_hash: str) -> None:
        """End a session; unknown ones are ignored."""

    @abc.abstractmethod
    async def purge_sessions(self, now: float) -> int:
        """Delete expired sessions; return how many."""
