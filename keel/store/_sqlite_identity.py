"""The SQLite store's identities: review-console users and their login sessions, and
the heartbeats of workers.

The `keel.store.identity.IdentityStore` of `keel.store.sqlite.SQLiteStore`, and the
worker heartbeats of its `JournalStore`.
"""

from __future__ import annotations

import time
from typing import Any

import pydantic_core

from keel.errors import ConfigError, Conflict
from keel.store._sqlite_core import SQLiteCore, loads
from keel.store.base import ConsoleSession, User, WorkerBeat


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode()


class SQLiteIdentity(SQLiteCore):
    """Worker heartbeats, console users and their sessions."""

    # -- worker heartbeats --------------------------------------------------------

    async def worker_beat(self, beat: WorkerBeat, *, forget_before: float | None = None) -> None:
        with self._tx() as db:
            db.execute(
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
                db.execute("DELETE FROM workers WHERE seen_at<?", (forget_before,))

    async def list_workers(self) -> list[WorkerBeat]:
        rows = self._db.execute(
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

    async def remove_worker(self, owner: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM workers WHERE owner=?", (owner,))

    # -- console users ----------------------------------------------------------

    _USER_COLS = "name, role, token_id, token_hash, groups, created_at"

    @staticmethod
    def _user(row: tuple[Any, ...]) -> User:
        return User(
            name=row[0],
            role=row[1],
            token_id=row[2],
            token_hash=row[3],
            groups=tuple(loads(row[4]) or ()),
            created_at=row[5],
        )

    async def add_user(self, user: User) -> None:
        groups = [g for g in user.groups if g]
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO users (name, role, token_id, token_hash, groups, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    user.name,
                    user.role,
                    user.token_id,
                    user.token_hash,
                    _text(pydantic_core.to_json(groups)),
                    user.created_at,
                ),
            )
            if cur.rowcount != 1:
                raise Conflict(f"user {user.name!r} already exists in {self.url}")
            self._audit(
                db,
                user.by or "cli",
                "user_added",
                user.name,
                {"role": user.role, "groups": groups},
                user.created_at,
            )

    async def get_user(self, name: str) -> User | None:
        row = self._db.execute(
            f"SELECT {self._USER_COLS} FROM users WHERE name=?", (name,)
        ).fetchone()
        return self._user(row) if row else None

    async def user_by_token_id(self, token_id: str) -> User | None:
        row = self._db.execute(
            f"SELECT {self._USER_COLS} FROM users WHERE token_id=?", (token_id,)
        ).fetchone()
        return self._user(row) if row else None

    async def list_users(self) -> list[User]:
        rows = self._db.execute(f"SELECT {self._USER_COLS} FROM users ORDER BY name").fetchall()
        return [self._user(r) for r in rows]

    async def remove_user(self, name: str, by: str = "cli") -> None:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise ConfigError(f"no user {name!r} in {self.url}; see: keel users list")
            db.execute("DELETE FROM users WHERE name=?", (name,))
            ended = db.execute("DELETE FROM sessions WHERE user=?", (name,)).rowcount
            self._audit(db, by, "user_removed", name, {"role": row[0], "sessions": ended}, now)

    async def rotate_token(
        self, name: str, token_id: str, token_hash: str, by: str = "cli"
    ) -> None:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE users SET token_id=?, token_hash=? WHERE name=?",
                (token_id, token_hash, name),
            )
            if cur.rowcount != 1:
                raise ConfigError(f"no user {name!r} in {self.url}; see: keel users list")
            ended = db.execute("DELETE FROM sessions WHERE user=?", (name,)).rowcount
            self._audit(db, by, "token_rotated", name, {"sessions": ended}, now)

    # -- console sessions -------------------------------------------------------

    async def create_session(self, session: ConsoleSession) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions (id_hash, user, csrf, client, created_at, expires_at)"
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

    async def get_session(self, id_hash: str, now: float) -> ConsoleSession | None:
        row = self._db.execute(
            "SELECT s.id_hash, s.user, s.csrf, s.client, s.created_at, s.expires_at,"
            " u.role, u.groups FROM sessions s JOIN users u ON u.name = s.user"
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

    async def delete_session(self, id_hash: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE id_hash=?", (id_hash,))

    async def purge_sessions(self, now: float) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM sessions WHERE expires_at<=?", (now,)).rowcount
