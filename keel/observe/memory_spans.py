"""What the spans of memory and session steps say: for a search its query (only when the
workflow keeps trace content), k, min_relevance and the hits' ids and scores; for a
write the ids written; for a session step its key and outcome. Read from the journal
entry (what the step asked, `StepRecord.input`; what it got, its output), so a replayed
step is described once, by what its first attempt saw.

`summary(attributes)` is the one-line form `keel trace` and `keel show` print.
"""

from __future__ import annotations

from typing import Any

from keel.observe.redact import Redactor
from keel.types import StepKind, StepRecord, StepStatus

_MAX_IDS = 100  # ids listed on one span: a bulk add of thousands is summarised by count


def attributes(rec: StepRecord, content: bool, r: Redactor | None) -> dict[str, Any]:
    """The `keel.memory.*` / `keel.session.*` attributes of a MEMORY or SESSION step
    (`r`: the redactor the query goes through; None for a record redacted already)."""
    if rec.kind is StepKind.MEMORY:
        return _memory(rec, content, r)
    if rec.kind is StepKind.SESSION:
        return _session(rec)
    return {}


def _memory(rec: StepRecord, content: bool, r: Redactor | None) -> dict[str, Any]:
    op = rec.name.removeprefix("memory.")
    asked = rec.input if isinstance(rec.input, dict) else {}
    out = rec.output if rec.status is StepStatus.OK else None
    attrs: dict[str, Any] = {"keel.memory.operation": op}
    if isinstance(asked.get("namespace"), str):
        attrs["keel.memory.namespace"] = asked["namespace"]
    if op == "search":
        if content and isinstance(asked.get("query"), str):
            query = asked["query"]
            attrs["keel.memory.query"] = r.text(query) if r is not None else query
        for name in ("k", "min_relevance"):
            if asked.get(name) is not None:
                attrs[f"keel.memory.{name}"] = asked[name]
        if isinstance(out, list):
            hits = [h for h in out if isinstance(h, dict)]
            attrs["keel.memory.hits"] = [str(h.get("id")) for h in hits]
            attrs["keel.memory.scores"] = [round(float(h.get("score") or 0.0), 4) for h in hits]
    elif op in ("add", "add_many", "supersede", "forget"):
        written = out if isinstance(out, list) else [out] if isinstance(out, str) else []
        if written:
            attrs["keel.memory.count"] = len(written)
            attrs["keel.memory.ids"] = [str(i) for i in written[:_MAX_IDS]]
        if isinstance(asked.get("supersedes"), str):
            attrs["keel.memory.supersedes"] = asked["supersedes"]
    elif op == "extract" and isinstance(out, str):
        attrs["keel.memory.extraction"] = out
    return attrs


def _session(rec: StepRecord) -> dict[str, Any]:
    op = rec.name.removeprefix("session.")
    asked = rec.input if isinstance(rec.input, dict) else {}
    out = rec.output if rec.status is StepStatus.OK else None
    attrs: dict[str, Any] = {"keel.session.operation": op}
    for name in ("id", "key"):
        if isinstance(asked.get(name), str):
            attrs[f"keel.session.{name}"] = asked[name]
    if op == "get" and isinstance(out, dict):
        attrs["keel.session.found"] = "value" in out
    elif isinstance(out, bool):  # set, delete, compare-and-set: whether it applied
        attrs["keel.session.applied"] = out
    return attrs


def summary(attrs: dict[str, Any]) -> str:
    """A memory or session span's attributes in one line ("" for other spans), e.g.
    `search "tea?" k=5 ≥0.5 → mem_1 0.91, mem_2 0.62`."""
    if "keel.memory.operation" in attrs:
        op = str(attrs["keel.memory.operation"])
        ns = attrs.get("keel.memory.namespace")
        text = f"{op} in {ns}" if ns else op
        if op == "search":
            if "keel.memory.query" in attrs:
                text += f" {_quoted(attrs['keel.memory.query'])}"
            if "keel.memory.k" in attrs:
                text += f" k={attrs['keel.memory.k']}"
            if attrs.get("keel.memory.min_relevance") is not None:
                text += f" ≥{attrs['keel.memory.min_relevance']}"
            hits = list(
                zip(
                    attrs.get("keel.memory.hits") or [],
                    attrs.get("keel.memory.scores") or [],
                    strict=False,
                )
            )
            if "keel.memory.hits" in attrs:
                shown = ", ".join(f"{i} {s:.2f}" for i, s in hits[:5])
                more = f" +{len(hits) - 5} more" if len(hits) > 5 else ""
                text += f" → {shown}{more}" if hits else " → no hits"
        elif "keel.memory.ids" in attrs:
            ids = attrs["keel.memory.ids"]
            count = int(attrs.get("keel.memory.count") or len(ids))
            text += f" → {', '.join(ids[:3])}" + (f" +{count - 3} more" if count > 3 else "")
            if "keel.memory.supersedes" in attrs:
                text += f" (supersedes {attrs['keel.memory.supersedes']})"
        elif "keel.memory.extraction" in attrs:
            text += f" → run {attrs['keel.memory.extraction']}"
        return text
    if "keel.session.operation" in attrs:
        text = f"session {attrs['keel.session.operation']}"
        if "keel.session.key" in attrs:
            text += f" {attrs['keel.session.key']!r}"
        if "keel.session.found" in attrs:
            text += " → found" if attrs["keel.session.found"] else " → absent"
        elif "keel.session.applied" in attrs:
            text += " → applied" if attrs["keel.session.applied"] else " → not applied"
        return text
    return ""


def _quoted(text: Any) -> str:
    s = str(text)
    return repr(s if len(s) <= 60 else s[:59] + "…")
