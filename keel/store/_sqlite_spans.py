"""The SQLite store's spans: the local trace store (keel.observe).

One concern of `keel.store.sqlite.SQLiteStore` (the store interface is to be split along
the same lines).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keel.engine.serde import from_json
from keel.store._sqlite_core import SQLiteCore


def _reconstructed(attributes: str | None) -> int:
    """Whether a span row's attributes mark it reconstructed from the journal
    (keel.observe.executions): a real span of that execution replaces it."""
    key = "keel.execution.interrupted"
    if not attributes or f'"{key}"' not in attributes:
        return 0
    return int(bool(from_json(attributes).get(key)))


class SQLiteSpans(SQLiteCore):
    """Spans, written and read by keel.observe."""

    async def write_spans(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert span rows (see keel.observe.spans.SpanRow.row); duplicates are ignored,
        except that an execution's own span replaces one reconstructed for it (written
        by the next execution while the first's own write was still on its way)."""
        if not rows:
            return
        seal = self._seal
        stored = [
            (
                *r[:9],
                seal(r[9], "spans.status_message", r[1], r[0]),
                seal(r[10], "spans.attributes", r[1], r[0]),
                seal(r[11], "spans.events", r[1], r[0]),
                r[12],
                _reconstructed(r[10]),
            )
            for r in rows
        ]
        with self._tx() as db:
            db.executemany(
                "INSERT INTO spans (span_id, trace_id, parent_id, run_id, name, kind,"
                " start_ns, end_ns, status, status_message, attributes, events, links,"
                " reconstructed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (trace_id, span_id) DO UPDATE SET name=excluded.name,"
                " start_ns=excluded.start_ns, end_ns=excluded.end_ns, status=excluded.status,"
                " status_message=excluded.status_message, attributes=excluded.attributes,"
                " events=excluded.events, links=excluded.links,"
                " reconstructed=excluded.reconstructed"
                " WHERE spans.reconstructed AND NOT excluded.reconstructed",
                stored,
            )

    _SPAN_SEALED = ((9, "spans.status_message"), (10, "spans.attributes"), (11, "spans.events"))

    async def load_spans(self, trace_id: str) -> list[tuple[Any, ...]]:
        rows = self._db.execute(
            "SELECT span_id, trace_id, parent_id, run_id, name, kind, start_ns, end_ns, status,"
            " status_message, attributes, events, links FROM spans WHERE trace_id=?"
            " ORDER BY start_ns",
            (trace_id,),
        ).fetchall()
        return [tuple(self._opened(r, self._SPAN_SEALED, r[1], r[0])) for r in rows]

    async def span_ids(self, trace_id: str) -> set[str]:
        rows = self._db.execute("SELECT span_id FROM spans WHERE trace_id=?", (trace_id,))
        return {r[0] for r in rows.fetchall()}

    async def purge_spans(self, ended_before_ns: int) -> int:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM spans WHERE end_ns IS NOT NULL AND end_ns<?", (ended_before_ns,)
            )
        return cur.rowcount
