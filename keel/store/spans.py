"""`SpanStore`: the local trace store that keel.observe writes and reads."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from keel.store.records import SpanRecord


class SpanStore(abc.ABC):
    """Spans by trace.

    Example:
        await store.write_spans([record]); spans = await store.load_spans(record.trace_id)
    """

    @abc.abstractmethod
    async def write_spans(self, rows: Sequence[SpanRecord]) -> None:
        """Insert spans; a span already stored is kept, except that an execution's own
        span replaces one reconstructed for it from the journal (attribute
        `keel.execution.interrupted`)."""

    @abc.abstractmethod
    async def load_spans(self, trace_id: str) -> list[SpanRecord]:
        """The trace's spans, by start time."""

    @abc.abstractmethod
    async def span_ids(self, trace_id: str) -> set[str]:
        """The ids of the trace's stored spans."""

    @abc.abstractmethod
    async def purge_spans(self, ended_before_ns: int) -> int:
        """Delete spans that ended before `ended_before_ns`; how many."""
