"""Spans: the local trace store of keel.observe (the `keel.store.spans.SpanStore`
queries)."""

from __future__ import annotations

from collections.abc import Sequence

from keel._jsonv import from_json
from keel.store.records import SpanRecord
from keel.store.sql.core import Session

_SPAN_SEALED = ((9, "spans.status_message"), (10, "spans.attributes"), (11, "spans.events"))
# A reconstructed span is written by the next execution while the first's own write may
# still be on its way: the real one replaces it, not the reverse.
_UPSERT = (
    "INSERT INTO spans (span_id, trace_id, parent_id, run_id, name, kind,"
    " start_ns, end_ns, status, status_message, attributes, events, links,"
    " reconstructed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (trace_id, span_id) DO UPDATE SET name=excluded.name,"
    " start_ns=excluded.start_ns, end_ns=excluded.end_ns, status=excluded.status,"
    " status_message=excluded.status_message, attributes=excluded.attributes,"
    " events=excluded.events, links=excluded.links,"
    " reconstructed=excluded.reconstructed"
    " WHERE spans.reconstructed <> 0 AND excluded.reconstructed = 0"
)


def _reconstructed(attributes: str | None) -> int:
    """Whether a span row's attributes mark it reconstructed from the journal
    (keel.observe.executions): a real span of that execution replaces it."""
    key = "keel.execution.interrupted"
    if not attributes or f'"{key}"' not in attributes:
        return 0
    return int(bool(from_json(attributes).get(key)))


def write_spans(s: Session, rows: Sequence[SpanRecord]) -> None:
    """Store spans (a real span replaces a reconstructed one, not the reverse)."""
    if not rows:
        return
    seal = s.seal
    stored = [
        (
            r.span_id,
            r.trace_id,
            r.parent_id,
            r.run_id,
            r.name,
            r.kind,
            r.start_ns,
            r.end_ns,
            r.status,
            seal(r.status_message, "spans.status_message", r.trace_id, r.span_id),
            seal(r.attributes, "spans.attributes", r.trace_id, r.span_id),
            seal(r.events, "spans.events", r.trace_id, r.span_id),
            r.links,
            _reconstructed(r.attributes),
        )
        for r in rows
    ]
    with s.write():
        s.executemany(_UPSERT, stored)


def load_spans(s: Session, trace_id: str) -> list[SpanRecord]:
    """The spans of `trace_id`, by start time."""
    rows = s.execute(
        "SELECT span_id, trace_id, parent_id, run_id, name, kind, start_ns, end_ns, status,"
        " status_message, attributes, events, links FROM spans WHERE trace_id=?"
        " ORDER BY start_ns",
        (trace_id,),
    ).fetchall()
    return [SpanRecord(*s.opened(r, _SPAN_SEALED, r[1], r[0])) for r in rows]


def span_ids(s: Session, trace_id: str) -> set[str]:
    """The ids of the spans stored for `trace_id`."""
    rows = s.execute("SELECT span_id FROM spans WHERE trace_id=?", (trace_id,))
    return {r[0] for r in rows.fetchall()}


def purge_spans(s: Session, ended_before_ns: int) -> int:
    """Drop spans that ended before `ended_before_ns`; how many."""
    with s.write():
        cur = s.execute(
            "DELETE FROM spans WHERE end_ns IS NOT NULL AND end_ns<?", (ended_before_ns,)
        )
    return cur.rowcount
