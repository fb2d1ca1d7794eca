"""IdentityStore conformance: console users and their tokens, sessions that expire,
and removing a user or rotating their token ends their sessions."""

from __future__ import annotations

import pytest

from keel.errors import ConfigError, Conflict
from keel.store import Store
from keel.store.records import ConsoleSession, User

T0 = 1_000.0


def _user(name: str, token_id: str = "", role: str = "reviewer") -> User:
    return User(
        name=name,
        role=role,
        token_id=token_id or f"{name:0<16}"[:16],
        token_hash=f"sha256$salt${name}",
        groups=("payments",),
        created_at=T0,
    )


def _session(id_hash: str, user: str, expires_at: float = T0 + 100) -> ConsoleSession:
    return ConsoleSession(
        id_hash=id_hash,
        user=user,
        csrf=f"csrf-{id_hash}",
        client="10.0.0.1",
        created_at=T0,
        expires_at=expires_at,
    )


async def test_users_are_added_found_and_listed(store: Store) -> None:
    await store.add_user(_user("rita", "aaaaaaaaaaaaaaaa"))
    await store.add_user(_user("ada", "bbbbbbbbbbbbbbbb", role="admin"))
    got = await store.get_user("rita")
    assert got is not None
    assert (got.name, got.role, got.token_id, got.token_hash, got.groups, got.created_at) == (
        "rita",
        "reviewer",
        "aaaaaaaaaaaaaaaa",
        "sha256$salt$rita",
        ("payments",),
        T0,
    )
    found = await store.user_by_token_id("bbbbbbbbbbbbbbbb")
    assert found is not None and found.name == "ada"
    assert await store.get_user("nobody") is None
    assert await store.user_by_token_id("cccccccccccccccc") is None
    assert [u.name for u in await store.list_users()] == ["ada", "rita"]
    with pytest.raises(Conflict):
        await store.add_user(_user("rita", "dddddddddddddddd"))
    assert [e.action for e in await store.audit_log("rita")] == ["user_added"]


async def test_sessions_carry_their_users_role_and_expire(store: Store) -> None:
    await store.add_user(_user("rita"))
    await store.create_session(_session("h1", "rita", expires_at=T0 + 100))
    got = await store.get_session("h1", T0 + 1)
    assert got == ConsoleSession(
        "h1", "rita", "csrf-h1", "10.0.0.1", T0, T0 + 100, "reviewer", ("payments",)
    )
    assert await store.get_session("nope", T0 + 1) is None
    assert await store.get_session("h1", T0 + 100) is None  # expires_at <= now: gone
    assert await store.get_session("h1", T0 + 99.9) is not None
    await store.delete_session("h1")
    assert await store.get_session("h1", T0 + 1) is None
    await store.delete_session("h1")  # deleting twice is harmless


async def test_purge_removes_only_expired_sessions(store: Store) -> None:
    await store.add_user(_user("rita"))
    for id_hash, expires in (("old1", T0 + 10), ("old2", T0 + 20), ("live", T0 + 30)):
        await store.create_session(_session(id_hash, "rita", expires_at=expires))
    assert await store.purge_sessions(T0 + 20) == 2
    assert await store.purge_sessions(T0 + 20) == 0
    assert await store.get_session("live", T0 + 20) is not None


async def test_a_session_of_a_user_that_does_not_exist_is_refused(store: Store) -> None:
    await store.create_session(_session("ghost", "nobody"))
    assert await store.get_session("ghost", T0 + 1) is None


async def test_removing_a_user_ends_their_sessions_and_is_audited(store: Store) -> None:
    await store.add_user(_user("rita", "aaaaaaaaaaaaaaaa"))
    await store.add_user(_user("otto", "bbbbbbbbbbbbbbbb"))
    for id_hash, user in (("r1", "rita"), ("r2", "rita"), ("o1", "otto")):
        await store.create_session(_session(id_hash, user))
    await store.remove_user("rita")
    assert await store.get_user("rita") is None
    assert await store.user_by_token_id("aaaaaaaaaaaaaaaa") is None
    assert await store.get_session("r1", T0 + 1) is None
    other = await store.get_session("o1", T0 + 1)
    assert other is not None and other.user == "otto"
    added, removed = await store.audit_log("rita")
    assert (added.action, removed.action) == ("user_added", "user_removed")
    assert removed.detail is not None and removed.detail["sessions"] == 2
    with pytest.raises(ConfigError, match="no user 'rita'"):
        await store.remove_user("rita")
    # a new user of the same name starts clean: no session of the old one comes back
    await store.add_user(_user("rita", "cccccccccccccccc"))
    assert await store.get_session("r1", T0 + 1) is None
    assert await store.get_session("r2", T0 + 1) is None


async def test_rotating_a_token_replaces_it_and_ends_sessions(store: Store) -> None:
    await store.add_user(_user("rita", "aaaaaaaaaaaaaaaa"))
    await store.create_session(_session("r1", "rita"))
    await store.rotate_token("rita", "dddddddddddddddd", "sha256$new$digest")
    assert await store.user_by_token_id("aaaaaaaaaaaaaaaa") is None
    user = await store.user_by_token_id("dddddddddddddddd")
    assert user is not None and (user.name, user.token_hash) == ("rita", "sha256$new$digest")
    assert (user.role, user.groups) == ("reviewer", ("payments",))  # nothing else changed
    assert await store.get_session("r1", T0 + 1) is None
    assert (await store.audit_log("rita"))[-1].action == "token_rotated"
    with pytest.raises(ConfigError, match="no user 'nobody'"):
        await store.rotate_token("nobody", "eeeeeeeeeeeeeeee", "sha256$x$y")
    assert await store.user_by_token_id("eeeeeeeeeeeeeeee") is None
