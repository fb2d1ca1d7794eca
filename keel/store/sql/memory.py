"""Long-term memory rows, their keyword search and extraction statuses (the
`keel.store.memory.MemoryStore` queries), written once for every dialect: only the
full-text query itself is the dialect's (`Dialect.memory_match`, `memory_keyword`).

Text, context and metadata are stored in clear: the database indexes them for
full-text search, which it cannot do over sealed values.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import pydantic_core

from keel.errors import Conflict, MemoryNotFound
from keel.store.records import KeywordHit, MemoryExtract, MemoryNamespace, MemoryRow
from keel.store.sql.core import Session, loads
from keel.store.sql.dialect import marks
from keel.store.sql.writes import audit

_COLS = (
    "seq, id, namespace, text, context, metadata, digest, embedder, {vector}, valid_from,"
    " valid_to, superseded_by, source, created_at"
)
_INSERT = (
    "INSERT INTO memories (id, namespace, text, context, metadata, digest, embedder, vector,"
    " valid_from, valid_to, superseded_by, source, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
# Facts valid now, or at a given time (`as_of`): [valid_from, valid_to).
_CURRENT = "m.valid_to IS NULL"
_AS_OF = "m.valid_from <= ? AND (m.valid_to IS NULL OR m.valid_to > ?)"


def _values(row: MemoryRow) -> tuple[Any, ...]:
    meta = None if row.metadata is None else pydantic_core.to_json(row.metadata).decode()
    return (
        row.id,
        row.namespace,
        row.text,
        row.context,
        meta,
        row.digest,
        row.embedder,
        row.vector,
        row.valid_from,
        row.valid_to,
        row.superseded_by,
        row.source,
        row.created_at or row.valid_from,
    )


def _row(r: Sequence[Any]) -> MemoryRow:
    return MemoryRow(
        seq=int(r[0]),
        id=r[1],
        namespace=r[2],
        text=r[3],
        context=r[4],
        metadata=loads(r[5]),
        digest=r[6],
        embedder=r[7],
        vector=None if r[8] is None else bytes(r[8]),
        valid_from=r[9],
        valid_to=r[10],
        superseded_by=r[11],
        source=r[12],
        created_at=r[13],
    )


def _cols(vectors: bool) -> str:
    return _COLS.format(vector="vector" if vectors else "NULL")


def memory_insert(s: Session, rows: Sequence[MemoryRow]) -> list[str]:
    """Insert the rows not stored yet (by id); the ids newly written."""
    new: list[str] = []
    with s.write():
        for row in rows:
            if s.execute(_INSERT, _values(row)).rowcount:
                new.append(row.id)
    return new


def memory_rows(
    s: Session, ids: Sequence[str], seqs: Sequence[int], vectors: bool
) -> list[MemoryRow]:
    """The rows with these ids or seqs, in seq order."""
    out: list[MemoryRow] = []
    step = s.dialect.max_params
    for col, keys in (("id", list(dict.fromkeys(ids))), ("seq", list(dict.fromkeys(seqs)))):
        for i in range(0, len(keys), step):
            part = keys[i : i + step]
            found = s.execute(
                f"SELECT {_cols(vectors)} FROM memories WHERE {col} IN ({marks(len(part))})",
                part,
            ).fetchall()
            out.extend(_row(r) for r in found)
    unique = {r.seq: r for r in out}
    return [unique[k] for k in sorted(unique)]


def memory_keyword(
    s: Session, namespace: str, terms: Sequence[str], as_of: float | None, limit: int
) -> list[KeywordHit]:
    """Full-text candidates, best first."""
    # NUL ends a string in both databases' query parsers: never part of a word anyway.
    terms = [t for t in dict.fromkeys(t.replace("\x00", "") for t in terms) if t.strip()]
    if not terms or limit < 1:
        return []
    validity = _CURRENT if as_of is None else _AS_OF
    args: list[Any] = [s.dialect.memory_match(terms), namespace]
    if as_of is not None:
        args += [as_of, as_of]
    found = s.execute(s.dialect.memory_keyword(validity), [*args, limit]).fetchall()
    return [KeywordHit(seq=int(r[0]), score=float(r[1])) for r in found]


def memory_vectors(
    s: Session, namespace: str, after_seq: int, limit: int
) -> list[tuple[int, str, bytes | None]]:
    """(seq, embedder, vector) of the rows after `after_seq`, in seq order."""
    found = s.execute(
        "SELECT seq, embedder, vector FROM memories WHERE namespace=? AND seq>?"
        " ORDER BY seq LIMIT ?",
        (namespace, after_seq, limit),
    ).fetchall()
    return [(int(r[0]), r[1], None if r[2] is None else bytes(r[2])) for r in found]


def memory_list(
    s: Session, namespace: str, after_seq: int, limit: int, current: bool
) -> list[MemoryRow]:
    """A page of the namespace's rows, in seq order, without vectors."""
    only = " AND valid_to IS NULL" if current else ""
    found = s.execute(
        f"SELECT {_cols(False)} FROM memories WHERE namespace=? AND seq>?{only}"
        " ORDER BY seq LIMIT ?",
        (namespace, after_seq, limit),
    ).fetchall()
    return [_row(r) for r in found]


def memory_namespaces(s: Session, limit: int) -> list[MemoryNamespace]:
    """Each namespace with its current and superseded counts, in name order."""
    found = s.execute(
        "SELECT namespace, SUM(CASE WHEN valid_to IS NULL THEN 1 ELSE 0 END), COUNT(*),"
        " MAX(created_at) FROM memories GROUP BY namespace ORDER BY namespace LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        MemoryNamespace(r[0], int(r[1]), int(r[2]) - int(r[1]), float(r[3] or 0.0)) for r in found
    ]


def memory_forget(s: Session, memory_id: str, by: str | None) -> bool:
    """Delete one memory (zeroed on disk where the database can); True if it existed.
    The audit entry names the namespace, never the text: forgetting must leave none."""
    with s.scrubbing(), s.write():
        row = s.execute("SELECT namespace FROM memories WHERE id=?", (memory_id,)).fetchone()
        if row is None:
            return False
        s.execute("DELETE FROM memories WHERE id=?", (memory_id,))
        if by is not None:
            audit(s, by, "memory_forgotten", memory_id, {"namespace": row[0]}, time.time())
        return True


def memory_supersede(s: Session, old_id: str, new: MemoryRow) -> MemoryRow:
    """Close `old_id` at `new.valid_from` and insert `new`, in one transaction."""
    with s.write():
        found = s.execute(
            f"SELECT {_cols(False)} FROM memories WHERE id=?{{for_update}}", (old_id,)
        ).fetchone()
        if found is None:
            raise MemoryNotFound(
                f"no memory has id {old_id!r}, so there is nothing to supersede: it was"
                " never added or was forgotten; add the new fact with memory.add instead",
                memory_id=old_id,
            )
        old = _row(found)
        if old.superseded_by == new.id:
            return old  # done before (a re-executed supersede): nothing changes
        if old.valid_to is not None:
            raise Conflict(
                f"memory {old_id!r} was superseded already (by {old.superseded_by!r}):"
                " supersede the current fact instead",
                memory_id=old_id,
                superseded_by=old.superseded_by,
            )
        s.execute(
            "UPDATE memories SET valid_to=?, superseded_by=? WHERE id=?",
            (new.valid_from, new.id, old_id),
        )
        if not s.execute(_INSERT, _values(new)).rowcount:  # rolls the close back too
            raise Conflict(
                f"memory id {new.id!r} is taken, so {old_id!r} was left as it was: give the"
                " new fact an id of its own",
                memory_id=new.id,
            )
    return dataclasses.replace(old, valid_to=new.valid_from, superseded_by=new.id)


def memory_extract_put(s: Session, items: Sequence[MemoryExtract]) -> None:
    """Upsert extraction statuses."""
    with s.write():
        for it in items:
            s.execute(
                "INSERT INTO memory_extracts (run_id, item, namespace, text, status, reason,"
                " memory_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, item) DO UPDATE SET status=excluded.status,"
                " reason=excluded.reason, memory_id=excluded.memory_id,"
                " updated_at=excluded.updated_at",
                (
                    it.run_id,
                    it.item,
                    it.namespace,
                    it.text,
                    it.status,
                    it.reason,
                    it.memory_id,
                    it.updated_at,
                ),
            )


def memory_extracts(s: Session, run_id: str) -> list[MemoryExtract]:
    """A run's extracted items in item order."""
    found = s.execute(
        "SELECT run_id, item, namespace, text, status, reason, memory_id, updated_at"
        " FROM memory_extracts WHERE run_id=? ORDER BY item",
        (run_id,),
    ).fetchall()
    return [MemoryExtract(*r) for r in found]
