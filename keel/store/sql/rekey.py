"""Encryption at rest: sealing every stored payload under the codec's current key
(`keel store rekey`), and counting which key sealed what. The envelope and the payload
columns are in keel/store/_sealed.py; the backend adds its file-level steps (vacuum,
log truncation) around `reseal`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.store import _sealed
from keel.store.sql.core import Session

if TYPE_CHECKING:
    from keel.codec import PayloadCodec

# A rekey transaction stops early past this many bytes of values (large outputs).
_REKEY_BATCH_BYTES = 8 * 1024 * 1024


def reseal(s: Session, codec: PayloadCodec, batch: int) -> dict[str, int]:
    """Seal every stored payload with `codec`'s current key, `batch` rows per short
    write transaction; counts of values `sealed` (were clear), `rekeyed` (older key)
    and `current` (already under the current key, skipped)."""
    done = {"sealed": 0, "rekeyed": 0, "current": 0}
    with s.scrubbing():
        for table in _sealed.TABLES:
            after: tuple[Any, ...] | None = None
            while True:
                with s.write():
                    after = _batch(s, codec, table, after, batch, done)
                if after is None:
                    break
    return done


def _batch(
    s: Session,
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
    cur = s.execute(sql + f" ORDER BY {keys} LIMIT ?", (*(after or ()), limit))
    updates: list[tuple[dict[str, bytes], tuple[Any, ...]]] = []
    seen, size, last = 0, 0, None
    for r in cur:
        seen, last, row = seen + 1, tuple(r[:nk]), r[nk : nk + nr]
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
        s.execute("{append_only_off:audit}")
    for changes, key in updates:
        sets = ", ".join(f"{c}=?" for c in changes)
        match = " AND ".join(f"{k}=?" for k in t.keys)
        s.execute(f"UPDATE {t.name} SET {sets} WHERE {match}", (*changes.values(), *key))
    if append_only:
        s.execute("{append_only_on:audit}")
    return last if seen == limit or size > _REKEY_BATCH_BYTES else None


def payload_keys(s: Session) -> dict[str | None, int]:
    """How many stored payloads each key id sealed (None: stored in clear)."""
    counts: dict[str | None, int] = {}
    for t in _sealed.TABLES:
        for col in t.payloads:  # only a sealed value's head: its key id
            rows = s.execute(f"SELECT {{head:{col}}} FROM {t.name} WHERE {col} IS NOT NULL")
            for (head,) in rows:
                kid = _sealed.key_of(head)
                counts[kid] = counts.get(kid, 0) + 1
    return counts
