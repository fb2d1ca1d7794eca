"""Stored payloads as the App's codec leaves them: the envelope, and where payloads live.

A sealed value is a BLOB: `MAGIC`, the key id's length (one byte) and the key id, then
the codec's bytes. A value written without a codec is TEXT, or for an out-of-line
output a BLOB of JSON, which never starts with MAGIC's NUL byte: both read as they are,
so a store keeps working when encryption is turned on, and `keel store rekey` seals
what was written before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError, PayloadUnreadable

if TYPE_CHECKING:
    from keel.codec import PayloadCodec

MAGIC = b"\x00KC\x01"
# A PayloadUnreadable's `kind`: waiting does not fix it (keel.engine.worker stops on it).
UNREADABLE = "unreadable"
_HEAD = len(MAGIC)


@dataclass(frozen=True, slots=True)
class Table:
    """A table's payload columns; everything else in it stays clear for SQL.

    A value's context is its column and `row` (the columns naming the row), so a
    sealed value only opens where it was written. `keys` page through the table.
    """

    name: str
    keys: tuple[str, ...]
    row: tuple[str, ...]
    payloads: tuple[str, ...]


# Every payload column of the SQLite store (docs/storage.md lists what stays clear).
TABLES = (
    Table("runs", ("id",), ("id",), ("input", "result", "error", "state")),
    Table(
        "steps",
        ("run_id", "key"),
        ("run_id", "key"),
        ("digest", "output", "error", "state_delta", "input", "attempt_log"),
    ),
    Table("signals", ("id",), ("run_id", "name"), ("payload",)),
    Table("blobs", ("digest",), ("digest",), ("data",)),
    Table("escalations", ("id",), ("id",), ("packet", "resolution")),
    Table("reviews", ("id",), ("id",), ("request", "decision")),
    Table("audit", ("id",), ("target",), ("detail",)),
    Table(
        "spans",
        ("trace_id", "span_id"),
        ("trace_id", "span_id"),
        ("attributes", "events", "status_message"),
    ),
    Table("kv_cache", ("key",), ("key",), ("value",)),
    Table("session_kv", ("session", "key"), ("session", "key"), ("value",)),
)


def context(where: str, row: tuple[str, ...]) -> bytes:
    return "\x1f".join((where, *row)).encode()


_HEADS: dict[str, bytes] = {}  # key id -> envelope head (a few keys: built once each)


def _head(kid: str) -> bytes:
    head = _HEADS.get(kid)
    if head is None:
        raw = kid.encode()
        if not 0 < len(raw) < 256:
            raise ConfigError(f"a codec's key_id must be 1-255 bytes, got {kid!r}")
        head = MAGIC + bytes((len(raw),)) + raw
        if len(_HEADS) < 64:
            _HEADS[kid] = head
    return head


def key_of(value: Any) -> str | None:
    """The id of the key a stored value was sealed with; None for a clear value."""
    if type(value) is bytes and value[:_HEAD] == MAGIC:
        return value[_HEAD + 1 : _HEAD + 1 + value[_HEAD]].decode()
    return None


def seal(codec: PayloadCodec, data: bytes, where: str, row: tuple[str, ...]) -> bytes:
    return _head(codec.key_id) + codec.encode(data, context(where, row))


def unseal(
    codec: PayloadCodec | None, value: str | bytes, where: str, row: tuple[str, ...]
) -> str | bytes:
    """A stored value's payload: clear values as they are, sealed ones decoded."""
    kid = key_of(value)
    if kid is None:
        return value
    assert isinstance(value, bytes)
    what = f"{where} of {'/'.join(row)}"
    if codec is None:
        raise PayloadUnreadable(
            f"cannot read {what}: it is encrypted (key {kid}) and no key is configured;"
            " set KEEL_ENCRYPTION_KEY to the keys this store was written with",
            key_id=kid,
            where=where,
            kind=UNREADABLE,
        )
    try:
        return codec.decode(value[_HEAD + 1 + value[_HEAD] :], kid, context(where, row))
    except PayloadUnreadable as exc:
        data = {**exc.data, "where": where, "kind": UNREADABLE}
        raise PayloadUnreadable(f"cannot read {what}: {exc.message}", **data) from None
    except Exception as exc:  # a custom codec's own failure: never return garbage
        raise PayloadUnreadable(
            f"cannot read {what}: the codec failed ({type(exc).__name__}: {exc})",
            key_id=kid,
            where=where,
            kind=UNREADABLE,
        ) from exc
