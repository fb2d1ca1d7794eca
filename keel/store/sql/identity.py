"""Identities: review-console users and their login sessions (the
`keel.store.identity.IdentityStore` queries), and the heartbeats of workers (part of the
`JournalStore`).

`sessions.user` is spelled `"user"`: a reserved word in Postgres.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pydantic_core

from keel.errors import ConfigError, Conflict
from keel.store.records import ConsoleSession, User, WorkerBeat
from keel.store.sql.core import Session, loads
from keel.store.sql.writes import audit

_USER_COLS = "name, role, token_id, token_hash, groups, created_at"


# -- worker heartbeats ------------------------------------------------------------


def worker_beat(s: Session, beat: WorkerBeat, forget_before: float | None) -> None:
    """Record a worker's heartbeat (and forget workers silent since `forget_before`)."""
    with s.write():
        s.execute(
            "INSERT INTO workers (owner, host, pid, workflows, embedded, started_at, seen_at,"
            " beat_every) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE SET"
            " workflows=excluded.workflows, seen_at=excluded.seen_at,"
            " beat_every=excluded.beat_every",
            (
                beat.owner,
                beat.host,
                beat.pid,
                pydantic_core.to_json(list(beat.workflows)).decode(),
                int(beat.embedded),
                beat.started_at,
                beat.seen_at,
                beat.beat_every,
            ),
        )
        if forget_before is not None:
            s.execute("DELETE FROM workers WHERE seen_at<?", (forget_before,))


def list_workers(s: Session) -> list[WorkerBeat]:
    """Every worker's last heartbeat, latest first."""
    rows = s.execute(
        "SELECT owner, host, pid, workflows, embedded, started_at, seen_at, beat_every"
        " FROM workers ORDER BY seen_at DESC"
    ).fetchall()
    return [
        WorkerBeat(
            owner=r[0],
            host=r[1],
            pid=r[2],
            workflows=tuple(loads(r[3]) or ()),
            embedded=bool(r[4]),
            started_at=r[5],
            seen_at=r[6],
            beat_every=r[7],
        )
        for r in rows
    ]


def remove_worker(s: Session, owner: str) -> None:
    """Forget worker `owner`."""
    with s.write():
        s.execute("DELETE FROM workers WHERE owner=?", (owner,))


# -- console users ------------------------------------------------------------------


def _user(row: Sequence[Any]) -> User:
    return User(
        name=row[0],
        role=row[1],
        token_id=row[2],
        token_hash=row[3],
        groups=tuple(loads(row[4]) or ()),
        created_at=row[5],
    )


def add_user(s: Session, user: User) -> None:
    """Add a console user (audited); Conflict if the name is taken."""
    groups = [g for g in user.groups if g]
    with s.write():
        cur = s.execute(
            # no conflict target: a taken name or token id is refused alike
            f"INSERT INTO users ({_USER_COLS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                user.name,
                user.role,
                user.token_id,
                user.token_hash,
                pydantic_core.to_json(groups).decode(),
                user.created_at,
            ),
        )
        if cur.rowcount != 1:
            raise Conflict(f"user {user.name!r} already exists in {s.url}")
        detail = {"role": user.role, "groups": groups}
        audit(s, user.by or "cli", "user_added", user.name, detail, user.created_at)


def get_user(s: Session, name: str) -> User | None:
    """User `name`, or None."""
    row = s.execute(f"SELECT {_USER_COLS} FROM users WHERE name=?", (name,)).fetchone()
    return _user(row) if row else None


def user_by_token_id(s: Session, token_id: str) -> User | None:
    """The user whose API token has id `token_id`, or None."""
    row = s.execute(f"SELECT {_USER_COLS} FROM users WHERE token_id=?", (token_id,)).fetchone()
    return _user(row) if row else None


def list_users(s: Session) -> list[User]:
    """Every user, by name."""
    return [_user(r) for r in s.execute(f"SELECT {_USER_COLS} FROM users ORDER BY name")]


def remove_user(s: Session, name: str, by: str) -> None:
    """Remove user `name` and end their sessions (audited)."""
    now = time.time()
    with s.write():
        row = s.execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
        if row is None:
            raise ConfigError(f"no user {name!r} in {s.url}; see: keel users list")
        s.execute("DELETE FROM users WHERE name=?", (name,))
        ended = s.execute('DELETE FROM sessions WHERE "user"=?', (name,)).rowcount
        audit(s, by, "user_removed", name, {"role": row[0], "sessions": ended}, now)


def rotate_token(s: Session, name: str, token_id: str, token_hash: str, by: str) -> None:
    """Give user `name` a new API token and end their sessions (audited)."""
    now = time.time()
    with s.write():
        cur = s.execute(
            "UPDATE users SET token_id=?, token_hash=? WHERE name=?",
            (token_id, token_hash, name),
        )
        if cur.rowcount != 1:
            raise ConfigError(f"no user {name!r} in {s.url}; see: keel users list")
        ended = s.execute('DELETE FROM sessions WHERE "user"=?', (name,)).rowcount
        audit(s, by, "token_rotated", name, {"sessions": ended}, now)


# -- console sessions ---------------------------------------------------------------


def create_session(s: Session, session: ConsoleSession) -> None:
    """Store a login session."""
    with s.write():
        s.execute(
            'INSERT INTO sessions (id_hash, "user", csrf, client, created_at, expires_at)'
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                session.id_hash,
                session.user,
                session.csrf,
                session.client,
                session.created_at,
                session.expires_at,
            ),
        )


def get_session(s: Session, id_hash: str, now: float) -> ConsoleSession | None:
    """The live session `id_hash` with its user's role and groups, or None."""
    row = s.execute(
        'SELECT s.id_hash, s."user", s.csrf, s.client, s.created_at, s.expires_at,'
        ' u.role, u.groups FROM sessions s JOIN users u ON u.name = s."user"'
        " WHERE s.id_hash=? AND s.expires_at>?",
        (id_hash, now),
    ).fetchone()
    if row is None:
        return None
    return ConsoleSession(
        id_hash=row[0],
        user=row[1],
        csrf=row[2],
        client=row[3],
        created_at=row[4],
        expires_at=row[5],
        role=row[6],
        groups=tuple(loads(row[7]) or ()),
    )


def delete_session(s: Session, id_hash: str) -> None:
    """End session `id_hash`."""
    with s.write():
        s.execute("DELETE FROM sessions WHERE id_hash=?", (id_hash,))


def purge_sessions(s: Session, now: float) -> int:
    """Drop expired sessions; how many."""
    with s.write():
        return s.execute("DELETE FROM sessions WHERE expires_at<=?", (now,)).rowcount
