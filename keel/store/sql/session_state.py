"""Session key-value state in `session_kv` (`keel.store.session_state`), both dialects.

Expiry is decided on the database clock (`{now}`), like leases: every worker agrees
when a value has expired. Expired rows read as absent until a retention sweep deletes
them (`keel.store.sql.retention.purge_expired`).
"""

from __future__ import annotations

import contextlib

from keel.store.session_state import RECEIPT_PREFIX, RECEIPT_TTL, Expect, SessionEntry
from keel.store.sql.core import Session

_LIVE = "(expires_at IS NULL OR expires_at>{now})"
_WHERE = f"session=? AND key=? AND {_LIVE}"
_UPSERT = (
    "INSERT INTO session_kv (session, key, value, version, writer, expires_at, updated_at)"
    " VALUES (?, ?, ?, 1, ?, {now} + ?, {now}) ON CONFLICT (session, key) DO UPDATE SET"
    " value=excluded.value, version=session_kv.version + 1, writer=excluded.writer,"
    " expires_at=excluded.expires_at, updated_at=excluded.updated_at"
)
# Only an expired row may be replaced: with a live one the insert changes nothing, and
# Postgres decides that after any concurrent insert of the key committed.
_IF_ABSENT = _UPSERT + " WHERE session_kv.expires_at IS NOT NULL AND session_kv.expires_at<={now}"


def session_get(s: Session, session: str, key: str) -> SessionEntry | None:
    """The live value of `key`, or None."""
    row = s.execute(
        f"SELECT value, writer, version FROM session_kv WHERE {_WHERE}", (session, key)
    ).fetchone()
    if row is None:
        return None
    value = s.open(row[0], "session_kv.value", session, key)
    assert value is not None
    return SessionEntry(value, row[1] or "", row[2])


def session_applied(s: Session, session: str, writer: str) -> bool:
    """Whether `writer`'s receipt is there."""
    row = s.execute(
        f"SELECT 1 FROM session_kv WHERE {_WHERE}", (session, RECEIPT_PREFIX + writer)
    ).fetchone()
    return row is not None


def session_write(
    s: Session,
    session: str,
    key: str,
    value: str | None,
    writer: str,
    ttl: float | None,
    expect: str | Expect | None,
) -> bool:
    """`SessionStateStore.session_write` in one transaction, the receipt with it."""
    # A deleted value is zeroed on disk (where the database can), as a purge's are.
    scrub = s.scrubbing() if value is None else contextlib.nullcontext()
    with scrub, s.write():
        if session_applied(s, session, writer):
            return True
        if isinstance(expect, str):
            row = s.execute(
                f"SELECT writer FROM session_kv WHERE {_WHERE}{{for_update}}", (session, key)
            ).fetchone()
            if row is None or row[0] != expect:
                return False
        if value is None:
            cur = s.execute(f"DELETE FROM session_kv WHERE {_WHERE}", (session, key))
            s.execute(  # an expired row goes too: nobody can read it any more
                "DELETE FROM session_kv WHERE session=? AND key=?", (session, key)
            )
            applied = cur.rowcount == 1
        else:
            sealed = s.seal(value, "session_kv.value", session, key)
            sql = _IF_ABSENT if expect is None else _UPSERT
            cur = s.execute(sql, (session, key, sealed, writer, ttl))
            applied = cur.rowcount == 1
        if applied:
            rkey = RECEIPT_PREFIX + writer
            s.execute(
                "INSERT INTO session_kv (session, key, value, version, writer, expires_at,"
                " updated_at) VALUES (?, ?, ?, 1, ?, {now} + ?, {now})"
                " ON CONFLICT (session, key) DO NOTHING",
                (
                    session,
                    rkey,
                    s.seal("true", "session_kv.value", session, rkey),
                    writer,
                    RECEIPT_TTL,
                ),
            )
        return applied


__all__ = ["session_applied", "session_get", "session_write"]
