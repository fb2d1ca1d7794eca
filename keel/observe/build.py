"""Spans built from journal entries: a child per step, grandchildren per tool call, model
call and retry attempt. The journal is the single source of truth, so a step appears in
its trace exactly once however often the run was replayed — and tracing costs nothing
while the run executes."""

from __future__ import annotations

from typing import Any

from keel.observe import genai, ids, memory_spans
from keel.observe.redact import Redactor
from keel.observe.spans import SpanRow
from keel.types import StepKind, StepRecord, StepStatus, StructuredError

_SKIP = (StepKind.VALUE,)


def _ns(ts: float | None) -> int | None:
    return None if ts is None else int(ts * 1_000_000_000)


class SpanBuilder:
    """Turns one run's journal entries into spans, redacting as it goes."""

    def __init__(
        self,
        run_id: str,
        redactor: Redactor,
        content: bool = True,
        executions: list[SpanRow] | None = None,
    ) -> None:
        self.run_id = run_id
        # Top-level steps hang under the execution that recorded them (else the root).
        self.executions = sorted(
            ((e.start_ns, e.end_ns, e.span_id) for e in executions or []),
            key=lambda e: e[0],  # by start only: an open execution's end is None
            reverse=True,
        )
        self.trace = ids.trace_id(run_id)
        self.root = ids.step_span_id(run_id, "<run>")
        self.r = redactor
        self.content = content

    def spans(self, records: list[StepRecord]) -> list[SpanRow]:
        out: list[SpanRow] = []
        for rec in records:
            if rec.kind in _SKIP or rec.status is StepStatus.PENDING:
                continue
            out += self.for_step(rec)
        _link_next_steps(out)
        return out

    def for_step(self, rec: StepRecord) -> list[SpanRow]:
        spans = [self._step_span(rec)]
        if rec.kind in (StepKind.TOOL, StepKind.LLM):
            llm = rec.kind is StepKind.LLM
            begin = rec.started_at
            for entry in rec.attempt_log or []:
                start, end = _window(llm and entry.get("call"), entry["start"], entry["end"])
                spans.append(
                    self._call_span(
                        rec,
                        int(entry["attempt"]),
                        start,
                        end,
                        failed=(entry["error"], entry.get("message", "")),
                    )
                )
                begin = entry.get("wake") or entry["end"]
            err = rec.error
            failed = (err.type, err.message) if err is not None else None
            call: Any = None
            if llm and err is not None:
                call = err.data.get("call_window")
            elif llm and isinstance(rec.output, dict) and rec.output.get("started_at"):
                sent = rec.output["started_at"]
                call = (sent, sent + float(rec.output.get("latency_ms") or 0.0) / 1000)
            start, end = _window(call, begin, rec.ended_at or begin)
            spans.append(self._call_span(rec, rec.attempts, start, end, failed=failed))
        return spans

    def open_parents(self, spans: list[SpanRow]) -> list[SpanRow]:
        """Open spans for steps still in flight (a map or phase) whose finished children
        are journaled, so a trace read mid-run has no dangling parent."""
        present = {s.span_id for s in spans}
        made: dict[str, SpanRow] = {}
        latest: dict[str, int] = {}  # the last end among each one's children
        for s in sorted(spans, key=lambda s: s.start_ns):
            key = s.attributes.get("keel.step.key")
            end = s.end_ns or s.start_ns
            while isinstance(key, str) and "/" in key:
                key = key.rsplit("/", 1)[0]
                span_id = ids.step_span_id(self.run_id, key)
                if span_id in present:
                    break
                latest[key] = max(latest.get(key, 0), end)
                if key not in made:
                    made[key] = SpanRow(
                        span_id=span_id,
                        trace_id=self.trace,
                        parent_id=None,
                        run_id=self.run_id,
                        name=key.rsplit("/", 1)[-1],
                        kind="INTERNAL",
                        start_ns=s.start_ns,
                        end_ns=None,
                        status="UNSET",
                        attributes={"keel.step.key": key, "keel.step.in_progress": True},
                    )
        for key, span in made.items():
            span.parent_id = self._parent(key, latest[key] / 1e9)
        return list(made.values())

    def _parent(self, key: str, ended: float | None) -> int:
        if "/" in key:
            return ids.step_span_id(self.run_id, key.rsplit("/", 1)[0])
        t = _ns(ended) or 0
        for start, end, span_id in self.executions:  # latest first
            if start <= t and (end is None or t <= end):
                return span_id
        return self.root

    def _step_span(self, rec: StepRecord) -> SpanRow:
        r = self.r
        attrs: dict[str, Any] = {
            "keel.step.key": rec.key,
            "keel.step.kind": rec.kind.value,
            "keel.step.name": rec.name,
            "keel.step.attempts": rec.attempts,
        }
        if rec.state_delta:
            attrs["keel.state.delta"] = r.text(rec.state_delta)
        if rec.fallback:
            attrs["keel.fallback"] = rec.fallback
        if rec.kind in (StepKind.MEMORY, StepKind.SESSION):  # what it searched, found, wrote
            attrs.update(memory_spans.attributes(rec, self.content, r))
        if self.content and rec.kind is not StepKind.LLM:  # trace_content=False: no payloads
            if rec.input is not None:
                attrs["keel.step.input"] = r.text(rec.input)
            if rec.blob:
                attrs["keel.step.output"] = "[stored out of line; see the journal]"
            elif rec.output is not None and rec.status is StepStatus.OK:
                attrs["keel.step.output"] = r.text(rec.output)
        span = SpanRow(
            span_id=ids.step_span_id(self.run_id, rec.key),
            trace_id=self.trace,
            parent_id=self._parent(rec.key, rec.ended_at),
            run_id=self.run_id,
            name=rec.key.rsplit("/", 1)[-1] if rec.kind is not StepKind.CHILD else rec.key,
            kind="INTERNAL",
            start_ns=_ns(rec.started_at) or 0,
            end_ns=_ns(rec.ended_at),
            status="ERROR" if rec.status is StepStatus.ERROR else "OK",
            attributes=attrs,
        )
        err = rec.error
        if err is not None:
            attrs["error.type"] = err.type
            msgs = err.data.get("messages")
            if msgs:
                attrs["keel.validation.messages"] = [r.text(str(m)) for m in msgs]
            if rec.status is StepStatus.ERROR:
                span.status_message = self.error_text(err)
            else:  # recovered by a fallback: the failure stays visible
                span.events.append(
                    {
                        "name": "keel.fallback",
                        "time_ns": span.end_ns or 0,
                        "attributes": {
                            "keel.fallback": rec.fallback or "",
                            "error.type": err.type,
                            "error.message": r.text(err.message),
                        },
                    }
                )
        return span

    def error_text(self, error: StructuredError) -> str:
        return self.r.truncate(f"{error.type}: {self.r.text(error.message)}")

    def _call_span(
        self,
        rec: StepRecord,
        attempt: int,
        begin: float,
        end: float,
        failed: tuple[str, str] | None,
    ) -> SpanRow:
        """The tool call or model call of one attempt."""
        r = self.r
        attrs: dict[str, Any] = {"keel.attempt": attempt}
        kind = "INTERNAL"
        final = attempt == rec.attempts
        if rec.kind is StepKind.TOOL:
            name = f"execute_tool {rec.name}"
            attrs.update(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": rec.name,
                    "gen_ai.tool.call.id": f"{self.run_id}:{rec.key}",
                    "gen_ai.tool.type": "function",
                }
            )
            if self.content and rec.input is not None:  # by parameter name: an object
                attrs["gen_ai.tool.call.arguments"] = r.json_text(rec.input)
            if final and failed is None and rec.output is not None and self.content:
                result = rec.output
                attrs["gen_ai.tool.call.result"] = (
                    r.text(result) if isinstance(result, str) else r.json_text(result)
                )
        else:
            kind = "CLIENT"
            out = rec.output if isinstance(rec.output, dict) and final else {}
            model = str(out.get("model") or rec.name)
            provider, _, short = model.partition("/")
            model_name = short or provider  # "openai/gpt-4o": provider openai, model gpt-4o
            name = f"chat {model_name}"  # "{gen_ai.operation.name} {gen_ai.request.model}"
            usage = out.get("usage") or {}
            params = (out.get("request") or {}).get("params") or {}
            attrs.update(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": provider if short else "unknown",
                    "gen_ai.request.model": model_name,
                    "gen_ai.response.model": model_name,
                    "keel.llm.model": model,  # the routing string that answered
                    "gen_ai.usage.input_tokens": int(usage.get("input_tokens") or 0),
                    "gen_ai.usage.output_tokens": int(usage.get("output_tokens") or 0),
                    "keel.cost.usd": float(out.get("cost_usd") or 0.0),
                    "keel.cache_hit": bool(out.get("cache_hit")),
                }
            )
            for p in ("temperature", "max_tokens", "top_p", "seed"):
                if p in params:
                    attrs[f"gen_ai.request.{p}"] = params[p]
            if out.get("finish_reason"):
                attrs["gen_ai.response.finish_reasons"] = [out["finish_reason"]]
            ctx = out.get("context")
            if isinstance(ctx, dict):  # how the context was fitted to its token budget
                blocks = ctx.get("blocks") or []
                attrs["keel.context.tokens"] = int(ctx.get("tokens") or 0)
                attrs["keel.context.budget"] = int(ctx.get("budget") or 0)
                for action in ("included", "truncated", "dropped"):
                    attrs[f"keel.context.{action}"] = [
                        str(b.get("name")) for b in blocks if b.get("action") == action
                    ]
            if out.get("tried") and len(out["tried"]) > 1:
                attrs["keel.llm.tried"] = [str(t) for t in out["tried"]]
            if self.content and out:
                messages = (out.get("request") or {}).get("messages")
                if messages is not None:
                    attrs["gen_ai.input.messages"] = r.json_text(genai.input_messages(messages))
                attrs["gen_ai.output.messages"] = r.json_text(genai.output_messages(out))
        span = SpanRow(
            span_id=ids.call_span_id(self.run_id, rec.key, attempt),
            trace_id=self.trace,
            parent_id=ids.step_span_id(self.run_id, rec.key),
            run_id=self.run_id,
            name=name,
            kind=kind,
            start_ns=_ns(begin) or 0,
            end_ns=_ns(end),
            status="ERROR" if failed is not None else "OK",
            attributes=attrs,
        )
        if failed is not None:
            attrs["error.type"] = failed[0]
            span.status_message = r.truncate(f"{failed[0]}: {r.text(failed[1])}")
        return span


def _window(call: Any, start: float, end: float) -> tuple[float, float]:
    """A model call's own (start, end) as the gateway recorded it, else the attempt's:
    the setup before the call (LiteLLM's first import, a rate limit) is the step's time."""
    if isinstance(call, list | tuple) and len(call) == 2:
        a, b = call
        if isinstance(a, int | float) and isinstance(b, int | float) and a <= b:
            return float(a), float(b)
    return start, end


def _link_next_steps(spans: list[SpanRow]) -> None:
    """`keel.next_step`: the step that followed each one in its scope."""
    import itertools

    by_parent: dict[int | None, list[SpanRow]] = {}
    for s in spans:
        if "keel.step.key" in s.attributes:
            by_parent.setdefault(s.parent_id, []).append(s)
    for group in by_parent.values():
        group.sort(key=lambda s: s.start_ns)
        for a, b in itertools.pairwise(group):
            a.attributes.setdefault("keel.next_step", b.attributes["keel.step.key"])
