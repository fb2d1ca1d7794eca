"""The SQLite store's encryption at rest: sealing every stored payload under the codec's
current key (`keel store rekey`), and counting which key sealed what.

One concern of `keel.store.sqlite.SQLiteStore`; the envelope and the payload columns are
in keel/store/_sealed.py.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError
from keel.store import _sealed
from keel.store._sqlite_core import SQLiteCore
from keel.store.base import RekeyCounts

if TYPE_CHECKING:
    from keel.codec import PayloadCodec

# A rekey transaction stops early past this many bytes of values (large outputs).
_REKEY_BATCH_BYTES = 8 * 1024 * 1024
# Restored by rekey, which alone may rewrite audit entries (to seal them anew).
_AUDIT_NO_UPDATE = """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"""


class SQLiteRekey(SQLiteCore):
    """Encryption at rest: sealing what is stored under the current key."""

    async def rekey(self, batch: int = 500, vacuum: bool = False) -> RekeyCounts:
        """Seal every stored payload with the codec's current key: values under older
        keys and values stored in clear. Counts what it did.

        Each batch is one short write transaction that reads values and rewrites them,
        so a worker writing meanwhile waits a moment and loses nothing. Values already
        under the current key are skipped, so a stopped rekey just runs again.
        Overwritten values are zeroed (secure_delete) and the WAL is truncated after;
        `vacuum` also rewrites the file, dropping what earlier writes left in free
        pages (it blocks writers while it runs).
        """
        codec = self.codec
        if codec is None:
            raise ConfigError(
                "no encryption key is configured, so there is no key to rekey to: set"
                " KEEL_ENCRYPTION_KEY (make a key with: keel store new-key)"
            )
        done = {"sealed": 0, "rekeyed": 0, "current": 0}
        with self._secure_delete():
            for table in _sealed.TABLES:
                after: tuple[Any, ...] | None = None
                while True:
                    with self._tx() as db:
                        after = self._rekey_batch(db, codec, table, after, batch, done)
                    if after is None:
                        break
            if vacuum:
                await self.reclaim_space(full=True)
        busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        return RekeyCounts(**done, key_id=codec.key_id, wal_truncated=not busy, vacuumed=vacuum)

    def _rekey_batch(
        self,
        db: sqlite3.Connection,
        codec: PayloadCodec,
        t: _sealed.Table,
        after: tuple[Any, ...] | None,
        limit: int,
        done: dict[str, int],
    ) -> tuple[Any, ...] | None:
        """Reseal up to `limit` rows of `t` past key `after`; the last key done, or None
        at the table's end."""
        keys, nk, nr = ", ".join(t.keys), len(t.keys), len(t.row)
        sql = f"SELECT {', '.join((*t.keys, *t.row, *t.payloads))} FROM {t.name}"
        if after is not None:
            sql += f" WHERE ({keys}) > ({', '.join('?' * nk)})"
        cur = db.execute(sql + f" ORDER BY {keys} LIMIT ?", (*(after or ()), limit))
        updates: list[tuple[dict[str, bytes], tuple[Any, ...]]] = []
        seen, size, last = 0, 0, None
        for r in cur:
            seen, last, row = seen + 1, r[:nk], r[nk : nk + nr]
            changes: dict[str, bytes] = {}
            for col, value in zip(t.payloads, r[nk + nr :], strict=True):
                kid = _sealed.key_of(value)
                if value is None or kid == codec.key_id:
                    done["current"] += value is not None
                    continue
                where = f"{t.name}.{col}"
                plain = _sealed.unseal(codec, value, where, row)
                raw = plain if isinstance(plain, bytes) else plain.encode()
                changes[col] = _sealed.seal(codec, raw, where, row)
                done["sealed" if kid is None else "rekeyed"] += 1
                size += len(value)
            if changes:
                updates.append((changes, last))
            if size > _REKEY_BATCH_BYTES:  # large outputs: keep each transaction short
                break
        cur.close()
        append_only = t.name == "audit" and updates
        if append_only:  # the one sanctioned rewrite: same entries, sealed anew
            db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        for changes, key in updates:
            sets = ", ".join(f"{c}=?" for c in changes)
            match = " AND ".join(f"{k}=?" for k in t.keys)
            db.execute(f"UPDATE {t.name} SET {sets} WHERE {match}", (*changes.values(), *key))
        if append_only:
            db.execute(_AUDIT_NO_UPDATE)
        return last if seen == limit or size > _REKEY_BATCH_BYTES else None

    async def payload_keys(self) -> dict[str | None, int]:
        """How many stored payloads each key id sealed (None: stored in clear)."""
        counts: dict[str | None, int] = {}
        for t in _sealed.TABLES:
            for col in t.payloads:  # only a sealed value's head: its key id
                rows = self._db.execute(
                    f"SELECT CASE WHEN typeof({col}) = 'blob' THEN substr({col}, 1, 300) END"
                    f" FROM {t.name} WHERE {col} IS NOT NULL"
                )
                for (head,) in rows:
                    kid = _sealed.key_of(head)
                    counts[kid] = counts.get(kid, 0) + 1
        return counts
