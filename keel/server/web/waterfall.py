"""A run's trace as waterfall rows: depth, bar geometry relative to the root span, details.

`layout(spans)` is pure: it takes `keel.observe.spans.SpanRow`s (or anything with the
same fields) and returns one `Row` per span, parents before their children and siblings
by start time. Bars are placed in the window from the root span's start to the latest
end seen, in percent, so `0 <= left` and `left + width <= 100`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from keel.observe import memory_spans
from keel.observe.ids import hex_span


class SpanLike(Protocol):
    span_id: int
    parent_id: int | None
    name: str
    start_ns: int
    end_ns: int | None
    status: str
    status_message: str | None
    attributes: dict[str, Any]
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Row:
    """One span as the waterfall draws it."""

    span_id: str
    name: str
    depth: int
    left: float  # percent of the trace window
    width: float  # percent of the trace window
    css: str  # bar classes: root / execution / step / tool / llm, plus error / retry / fallback
    status: str  # OK / ERROR / UNSET
    duration: float | None  # seconds; None while the span is open
    open: bool = False
    key: str | None = None  # the journal key of a step span
    kind: str | None = None  # the step kind of a step span
    model: str | None = None
    tool: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float | None = None
    cache_hit: bool = False
    attempt: int | None = None  # which attempt a tool / model call was
    attempts: int | None = None  # how many attempts its step made
    fallback: str | None = None  # the fallback a step took, or the models an LLM call tried
    error: str | None = None
    memory: str | None = None  # a memory or session step: what it asked, found, wrote

    @property
    def style(self) -> str:
        """The bar's inline geometry (a style attribute; CSP allows those)."""
        return f"left: {self.left:.3f}%; width: {self.width:.3f}%"

    @property
    def summary(self) -> str:
        """Everything the label shows, as one line (the label's tooltip when it is cut)."""
        parts = [self.name, "open" if self.open else _seconds(self.duration)]
        if self.model:
            parts.append(self.model)
        if self.tool and self.tool not in self.name:
            parts.append(self.tool)
        if self.input_tokens is not None:
            parts.append(f"{self.input_tokens}→{self.output_tokens or 0} tok")
        if self.cost:
            parts.append(money(self.cost))
        if self.cache_hit:
            parts.append("cache hit")
        if self.attempt is not None and (self.attempts or 1) > 1:
            parts.append(f"attempt {self.attempt}/{self.attempts}")
        elif self.attempt is None and self.attempts and self.attempts > 1:
            parts.append(f"{self.attempts} attempts")
        if self.fallback:
            parts.append(f"fallback: {self.fallback}")
        if self.error:
            parts.append(self.error)
        return " · ".join(parts)

    @property
    def retried(self) -> bool:
        """A failed attempt that was followed by another."""
        return "retry" in self.css.split()


def layout(spans: Iterable[SpanLike]) -> list[Row]:
    """Waterfall rows for `spans`: depth-first from the root, siblings by start time."""
    items = list(spans)
    if not items:
        return []
    by_id = {s.span_id: s for s in items}
    children: dict[int | None, list[SpanLike]] = {}
    for s in items:
        parent = s.parent_id if s.parent_id in by_id and s.parent_id != s.span_id else None
        children.setdefault(parent, []).append(s)
    for group in children.values():
        group.sort(key=lambda s: (s.start_ns, s.end_ns is None, s.end_ns or 0, s.name))

    tops = children.get(None, [])
    root = next((s for s in tops if _is_root(s)), tops[0] if tops else items[0])
    start = min([root.start_ns, *(s.start_ns for s in items)])
    ends = [s.end_ns for s in items if s.end_ns is not None]
    end = max([*ends, *(s.start_ns for s in items)])
    total = max(end - start, 1)

    rows: list[Row] = []
    seen: set[int] = set()

    def visit(span: SpanLike, depth: int, step_attempts: int | None) -> None:
        if span.span_id in seen:
            return
        seen.add(span.span_id)
        rows.append(_row(span, depth, start, end, total, step_attempts))
        attempts = _int(span.attributes.get("keel.step.attempts"))
        for child in children.get(span.span_id, []):
            visit(child, depth + 1, attempts)

    for top in tops:
        visit(top, 0, None)
    for s in sorted(items, key=lambda s: s.start_ns):  # a parent cycle: show it flat
        visit(s, 0, None)
    return rows


def _is_root(span: SpanLike) -> bool:
    attrs = span.attributes
    return (
        attrs.get("gen_ai.operation.name") == "invoke_workflow"
        or "keel.run.executions" in attrs
        or span.name.startswith("invoke_workflow")
    )


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _kind(span: SpanLike, is_top: bool) -> str:
    attrs = span.attributes
    op = attrs.get("gen_ai.operation.name")
    step = attrs.get("keel.step.kind")
    if "keel.execution" in attrs:
        return "execution"
    if _is_root(span):
        return "root"
    if op == "chat" or step == "llm":
        return "llm"
    if op == "execute_tool" or step == "tool":
        return "tool"
    return "root" if is_top and step is None else "step"


def _fallback(span: SpanLike) -> str | None:
    attrs = span.attributes
    taken = attrs.get("keel.fallback")
    if taken:
        return str(taken)
    for event in span.events or []:
        if event.get("name") == "keel.fallback":
            value = (event.get("attributes") or {}).get("keel.fallback")
            if value:
                return str(value)
    tried = attrs.get("keel.llm.tried")
    if isinstance(tried, Sequence) and not isinstance(tried, str) and len(tried) > 1:
        return "tried " + " → ".join(str(t) for t in tried)
    return None


def _error(span: SpanLike) -> str | None:
    if span.status == "ERROR":
        return span.status_message or str(span.attributes.get("error.type") or "error")
    for event in span.events or []:  # recovered by a fallback: the failure stays visible
        attrs = event.get("attributes") or {}
        if event.get("name") == "keel.fallback" and attrs.get("error.type"):
            return f"{attrs['error.type']}: {attrs.get('error.message', '')}".rstrip(": ")
    return None


def _row(
    span: SpanLike, depth: int, start: int, end: int, total: int, step_attempts: int | None
) -> Row:
    attrs = span.attributes
    is_open = span.end_ns is None
    span_end = end if is_open else max(span.end_ns or span.start_ns, span.start_ns)
    left = round(min(max((span.start_ns - start) / total * 100, 0.0), 100.0), 3)
    width = round(min(max((span_end - span.start_ns) / total * 100, 0.0), 100.0 - left), 3)
    kind = _kind(span, depth == 0)
    attempt = _int(attrs.get("keel.attempt"))
    attempts = _int(attrs.get("keel.step.attempts")) or step_attempts
    classes = [kind]
    if span.status == "ERROR":
        retried = attempt is not None and attempts is not None and attempt < attempts
        classes.append("retry" if retried else "error")
    fallback = _fallback(span)
    if fallback:
        classes.append("fallback")
    if is_open:
        classes.append("open")
    in_tok = _int(attrs.get("gen_ai.usage.input_tokens"))
    out_tok = _int(attrs.get("gen_ai.usage.output_tokens"))
    model = attrs.get("keel.llm.model") or attrs.get("gen_ai.request.model")
    tool = attrs.get("gen_ai.tool.name")
    key = attrs.get("keel.step.key")
    step_kind = attrs.get("keel.step.kind")
    return Row(
        span_id=hex_span(span.span_id),
        name=span.name,
        depth=depth,
        left=left,
        width=min(width, round(100.0 - left, 3)),
        css=" ".join(classes),
        status=span.status,
        duration=None if is_open else (span_end - span.start_ns) / 1e9,
        open=is_open,
        key=str(key) if key is not None else None,
        kind=str(step_kind) if step_kind is not None else None,
        model=str(model) if model else None,
        tool=str(tool) if tool else None,
        input_tokens=in_tok,
        output_tokens=out_tok,
        cost=_num(attrs.get("keel.cost.usd")),
        cache_hit=bool(attrs.get("keel.cache_hit")),
        attempt=attempt,
        attempts=attempts,
        fallback=fallback,
        error=_error(span),
        memory=memory_spans.summary(attrs) or None,
    )


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.2f} ms" if value < 1 else f"{value:.2f} s"


def money(value: float | None) -> str:
    """A cost in USD legible at any size: `$1.25`, `$0.0132`, `$0.0000018`; `—` for none."""
    if not value:
        return "—"
    if value >= 1:
        return f"${value:.2f}"
    if value >= 0.01:
        return f"${value:.4f}"
    text = f"{value:.8f}".rstrip("0").rstrip(".")
    return f"${text}" if text != "0" else "<$0.00000001"
