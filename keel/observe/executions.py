"""Execution spans the store lacks: executions whose worker died before writing theirs.

An execution writes its span when it ends; one killed mid-run never does. Its span is
reconstructed from the journal (status ERROR, `keel.execution.interrupted=true`): from
the previous execution's end (or the run's creation) to the last entry it journaled,
so its steps hang under it and the next execution's link resolves. When several
executions in a row died, the journal cannot tell which recorded what: the first of
them covers their entries, the others the time after it up to the next execution.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from keel.observe import ids
from keel.observe.spans import SpanRow
from keel.types import RunInfo, RunStatus, StepRecord, StepStatus

INTERRUPTED = "worker died; reconstructed from the journal"


def _ns(ts: float | None) -> int:
    return 0 if ts is None else int(ts * 1_000_000_000)


def numbers(spans: Iterable[SpanRow]) -> dict[int, SpanRow]:
    """The execution spans among `spans`, by execution number."""
    return {
        int(s.attributes["keel.execution"]): s for s in spans if "keel.execution" in s.attributes
    }


def missing(have: dict[int, SpanRow], upto: int) -> list[int]:
    return [n for n in range(1, upto + 1) if n not in have]


def reconstruct(
    run: RunInfo,
    have: dict[int, SpanRow],
    records: list[StepRecord],
    upto: int,
    cutoff_ns: int = 0,
) -> list[SpanRow]:
    """Spans for executions 1..`upto` not in `have`, from the journal. Those that would
    end before `cutoff_ns` (trace retention purged them) are not made again."""
    gaps = missing(have, upto)
    journaled = sorted(
        _ns(r.ended_at) for r in records if r.status is not StepStatus.PENDING and r.ended_at
    )
    out: list[SpanRow] = []
    for first, last in _groups(gaps):
        prev, nxt = have.get(first - 1), have.get(last + 1)
        begin = (prev.end_ns or prev.start_ns) if prev is not None else _ns(run.created_at)
        until = nxt.start_ns if nxt is not None else None
        inside = [t for t in journaled if t > begin and (until is None or t < until)]
        end = max(inside, default=begin)
        after = end + 1  # the later ones of a group: no entry of theirs is known
        for n in range(first, last + 1):
            if n == first:
                span = _span(run, n, begin, end, len(inside))
            else:
                span = _span(run, n, after, max(after, (until or after) - 1), None)
            if (span.end_ns or 0) >= cutoff_ns:
                out.append(span)
    return out


def in_progress(run: RunInfo, have: dict[int, SpanRow]) -> SpanRow:
    """The open span of the execution running elsewhere (the run is RUNNING): from its
    claim (the run's last update) to now."""
    prev = have.get(run.attempts - 1)
    start = max(_ns(run.updated_at), (prev.end_ns or prev.start_ns) if prev is not None else 0)
    span = _span(run, run.attempts, start, None, None)
    span.status, span.status_message = "UNSET", None
    span.attributes["keel.run.status"] = RunStatus.RUNNING.value
    del span.attributes["keel.execution.interrupted"]
    return span


def _span(run: RunInfo, n: int, start: int, end: int | None, entries: int | None) -> SpanRow:
    attrs: dict[str, Any] = {
        "keel.run.id": run.id,
        "keel.execution": n,
        "keel.run.resumed": n > 1,
        "gen_ai.workflow.name": run.workflow,
        "keel.run.status": "INTERRUPTED",
        "keel.execution.interrupted": True,
    }
    if entries is not None:
        attrs["keel.execution.journaled"] = entries  # journal entries it recorded
    return SpanRow(
        span_id=ids.execution_span_id(run.id, n),
        trace_id=ids.trace_id(run.id),
        parent_id=ids.step_span_id(run.id, "<run>"),
        run_id=run.id,
        name=f"execute {run.workflow}" + (" (resumed)" if n > 1 else ""),
        kind="INTERNAL",
        start_ns=start,
        end_ns=end,
        status="ERROR",
        status_message=INTERRUPTED,
        attributes=attrs,
        links=[ids.execution_span_id(run.id, n - 1)] if n > 1 else [],
    )


def _groups(gaps: list[int]) -> list[tuple[int, int]]:
    """Runs of consecutive numbers: [1, 2, 4] -> [(1, 2), (4, 4)]."""
    out: list[tuple[int, int]] = []
    for n in gaps:
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out
