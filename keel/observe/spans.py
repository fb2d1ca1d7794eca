"""Span records as Keel stores them, and their OpenTelemetry SDK form for export."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from keel.observe.ids import hex_span, hex_trace
from keel.store.records import SpanRecord

SEMCONV_VERSION = "1.44.0"  # the OpenTelemetry semantic conventions these spans follow
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
CONTENT_ATTRIBUTES = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "keel.step.input",  # a tool's arguments, a child's input
    "keel.step.output",  # a tool's result, a child's output
    "keel.memory.query",  # what a memory search asked
)


@dataclass(slots=True)
class SpanRow:
    """One finished (or interrupted) span."""

    span_id: int
    trace_id: int
    parent_id: int | None
    run_id: str
    name: str
    kind: str  # INTERNAL / CLIENT
    start_ns: int
    end_ns: int | None
    status: str  # OK / ERROR / UNSET
    status_message: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[int] = field(default_factory=list)

    def row(self) -> SpanRecord:
        """The stored form of this span (keel.store.SpanStore)."""
        return SpanRecord(
            hex_span(self.span_id),
            hex_trace(self.trace_id),
            hex_span(self.parent_id) if self.parent_id else None,
            self.run_id,
            self.name,
            self.kind,
            self.start_ns,
            self.end_ns,
            self.status,
            self.status_message,
            _dumps(self.attributes),
            json.dumps(self.events, default=str) if self.events else None,
            json.dumps([hex_span(x) for x in self.links]) if self.links else None,
        )

    @classmethod
    def from_row(cls, r: SpanRecord) -> SpanRow:
        """The span a stored record holds."""
        return cls(
            span_id=int(r.span_id, 16),
            trace_id=int(r.trace_id, 16),
            parent_id=int(r.parent_id, 16) if r.parent_id else None,
            run_id=r.run_id,
            name=r.name,
            kind=r.kind,
            start_ns=r.start_ns,
            end_ns=r.end_ns,
            status=r.status,
            status_message=r.status_message,
            attributes=json.loads(r.attributes),
            events=json.loads(r.events) if r.events else [],
            links=[int(x, 16) for x in json.loads(r.links)] if r.links else [],
        )

    def to_otel(self, resource: Any, scope: Any, with_content: bool) -> Any:
        """The SDK's ReadableSpan, for OTLP exporters (message content only if opted in)."""
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

        def ctx(span: int) -> SpanContext:
            return SpanContext(self.trace_id, span, False, TraceFlags(TraceFlags.SAMPLED))

        attrs = {
            k: _otel_value(v)
            for k, v in self.attributes.items()
            if with_content or k not in CONTENT_ATTRIBUTES
        }
        code = {"OK": StatusCode.OK, "ERROR": StatusCode.ERROR}.get(self.status, StatusCode.UNSET)
        return ReadableSpan(
            name=self.name,
            context=ctx(self.span_id),
            parent=ctx(self.parent_id) if self.parent_id else None,
            resource=resource,
            attributes=attrs,
            events=[
                Event(
                    e["name"],
                    {k: _otel_value(v) for k, v in e.get("attributes", {}).items()},
                    e["time_ns"],
                )
                for e in self.events
            ],
            links=[Link(ctx(x)) for x in self.links],
            kind=SpanKind.CLIENT if self.kind == "CLIENT" else SpanKind.INTERNAL,
            status=Status(code, self.status_message if code is StatusCode.ERROR else None),
            start_time=self.start_ns,
            end_time=self.end_ns or self.start_ns,
            instrumentation_scope=scope,
        )


def _otel_value(v: Any) -> Any:
    if isinstance(v, str | bool | int | float):
        return v
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return v
    if isinstance(v, list) and all(isinstance(x, float) for x in v):  # e.g. hit scores
        return v
    return json.dumps(v, default=str)


def _dumps(value: Any) -> str:
    import pydantic_core

    return pydantic_core.to_json(value, fallback=str).decode()
