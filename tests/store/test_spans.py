"""SpanStore conformance: spans by trace, duplicates kept once (a reconstructed span
gives way to the execution's own), and purging by end time."""

from __future__ import annotations

import json

from keel.store import Store
from keel.store.records import SpanRecord


def _span(
    span_id: str, trace: str = "t1", start: int = 1, end: int | None = 2, **kw: object
) -> SpanRecord:
    fields: dict[str, object] = {
        "span_id": span_id,
        "trace_id": trace,
        "parent_id": None,
        "run_id": "r1",
        "name": f"step {span_id}",
        "kind": "INTERNAL",
        "start_ns": start,
        "end_ns": end,
        "status": "OK",
        "status_message": None,
        "attributes": json.dumps({"keel.step": span_id}),
        "events": None,
        "links": None,
        **kw,
    }
    return SpanRecord(**fields)  # type: ignore[arg-type]


async def test_spans_load_by_trace_in_start_order(store: Store) -> None:
    a = _span("a", start=20, end=30, parent_id="b", events="[]", status_message="fine")
    b = _span("b", start=10, end=40)
    other = _span("c", trace="t2")
    await store.write_spans([a, b, other])
    await store.write_spans([])
    assert await store.load_spans("t1") == [b, a]
    assert await store.span_ids("t1") == {"a", "b"}
    assert await store.load_spans("none") == []
    assert await store.span_ids("none") == set()


async def test_a_span_written_twice_is_kept_once(store: Store) -> None:
    await store.write_spans([_span("a", name="first")])
    await store.write_spans([_span("a", name="second")])
    assert [s.name for s in await store.load_spans("t1")] == ["first"]


async def test_an_executions_own_span_replaces_a_reconstructed_one(store: Store) -> None:
    rebuilt = json.dumps({"keel.execution.interrupted": True})
    await store.write_spans([_span("a", name="rebuilt", attributes=rebuilt)])
    await store.write_spans([_span("a", name="own")])
    await store.write_spans([_span("a", name="rebuilt again", attributes=rebuilt)])
    assert [s.name for s in await store.load_spans("t1")] == ["own"]


async def test_purge_removes_spans_that_ended_before_the_cutoff(store: Store) -> None:
    await store.write_spans(
        [_span("old", end=5), _span("edge", end=10), _span("new", end=20), _span("open", end=None)]
    )
    assert await store.purge_spans(10) == 1
    assert await store.span_ids("t1") == {"edge", "new", "open"}
    assert await store.purge_spans(10) == 0
