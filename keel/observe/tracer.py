"""Tracing: engine hooks -> spans in the Keel store (and OTLP when configured).

Spans are built from journal entries as they become durable, with deterministic
ids, so tracing is replay-aware: a resumed run re-emits only spans that are not
already stored, and nothing is ever duplicated. Spans of a run are buffered and
written in one transaction when the run finishes or suspends (or the buffer
fills); a worker killed mid-run loses its buffer, and the resumed run re-emits
those spans from the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.engine.hooks import Hooks, StepEvent
from keel.observe import ids
from keel.observe.redact import Redactor
from keel.observe.spans import SpanRow
from keel.types import RunInfo, RunStatus, StepKind, StepRecord, StepStatus, StructuredError

if TYPE_CHECKING:
    from keel.engine.registry import Registry
    from keel.observe.export import OTLPExport
    from keel.store.base import Store

log = logging.getLogger("keel.observe")
_NS = 1_000_000_000
_FLUSH_AT = 512
_SKIP = (StepKind.VALUE,)


def _ns(ts: float | None) -> int | None:
    return None if ts is None else int(ts * _NS)


@dataclass
class _Run:
    run: RunInfo
    trace: int
    execution: int
    exec_span: SpanRow
    spans: list[SpanRow] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # key -> when the current attempt began
    content: bool = True


class Tracing(Hooks):
    """The engine hook that records a trace for every run (see keel/observe)."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        retention_days: float = 7.0,
        redactor: Redactor | None = None,
        export: OTLPExport | None = None,
        metrics: Any = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.retention_days = retention_days
        self.redactor = redactor or Redactor()
        self.export = export
        self.metrics = metrics
        self._runs: dict[str, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._purged_at = 0.0

    # -- executions ---------------------------------------------------------------------

    def execution_started(self, run: RunInfo, resumed: bool) -> None:
        trace = ids.trace_id(run.id)
        wf = self.registry.workflows.get(run.workflow)
        span = SpanRow(
            span_id=ids.execution_span_id(run.id, run.attempts),
            trace_id=trace,
            parent_id=ids.step_span_id(run.id, "<run>"),
            run_id=run.id,
            name=f"execute {run.workflow}" + (" (resumed)" if resumed else ""),
            kind="INTERNAL",
            start_ns=time.time_ns(),
            end_ns=None,
            status="UNSET",
            attributes={
                "keel.run.id": run.id,
                "keel.execution": run.attempts,
                "keel.run.resumed": resumed,
                "gen_ai.workflow.name": run.workflow,
            },
            links=[ids.execution_span_id(run.id, run.attempts - 1)] if run.attempts > 1 else [],
        )
        self._runs[run.id] = _Run(
            run,
            trace,
            run.attempts,
            span,
            content=getattr(wf, "trace_content", True) if wf else True,
        )

    def execution_ended(
        self, run: RunInfo, status: RunStatus | None, error: StructuredError | None
    ) -> None:
        st = self._runs.pop(run.id, None)
        if st is None:
            return
        now = time.time_ns()
        span = st.exec_span
        span.end_ns = now
        span.attributes["keel.run.status"] = status.value if status else "INTERRUPTED"
        span.status = "ERROR" if status is RunStatus.FAILED else "OK" if status else "UNSET"
        if error is not None:
            span.status_message = self._error_text(error)
        st.spans.append(span)
        if status is not None and status.terminal:
            st.spans.append(self._root(st, status, error, now))
            if self.metrics is not None:  # runs that ended, not each suspension
                self.metrics.run_ended(run.workflow, status.value)
        self._schedule(st.spans, check=st.execution > 1)

    def _root(
        self, st: _Run, status: RunStatus, error: StructuredError | None, end_ns: int
    ) -> SpanRow:
        """The trace root: the workflow invocation, from the run's creation to its end."""
        run = st.run
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": run.workflow,
            "keel.run.id": run.id,
            "keel.run.status": status.value,
            "keel.run.executions": st.execution,
            "keel.run.input": self.redactor.text(run.input),
        }
        if run.tenant:
            attrs["keel.tenant"] = run.tenant
        root = SpanRow(
            span_id=ids.step_span_id(run.id, "<run>"),
            trace_id=st.trace,
            parent_id=None,
            run_id=run.id,
            name=f"invoke_workflow {run.workflow}",
            kind="INTERNAL",
            start_ns=_ns(run.created_at) or end_ns,
            end_ns=end_ns,
            status="ERROR" if status is RunStatus.FAILED else "OK",
            attributes=attrs,
        )
        if error is not None:
            root.status_message = self._error_text(error)
            attrs["error.type"] = error.type
            if error.step:
                attrs["keel.error.step"] = error.step
        return root

    # -- steps --------------------------------------------------------------------------

    def step_retrying(self, ev: StepEvent, attempt: int, wake_at: float) -> None:
        st = self._runs.get(ev.run_id)
        if st is not None:
            st.marks[ev.key] = wake_at

    def step_replayed(self, ev: StepEvent) -> None:
        # Replay re-emits every span; the flush keeps only those the store lacks.
        # Metrics counted the step when it ran: never again.
        if ev.record is not None:
            self._spans_for(ev, replay=True)

    def step_recorded(self, ev: StepEvent) -> None:
        self._spans_for(ev, replay=False)

    def _spans_for(self, ev: StepEvent, replay: bool) -> None:
        st = self._runs.get(ev.run_id)
        rec = ev.record
        if st is None or rec is None or rec.kind in _SKIP:
            return
        if rec.status is StepStatus.PENDING:
            if rec.error is not None and rec.kind in (StepKind.TOOL, StepKind.LLM):
                st.spans.append(
                    self._call_span(st, rec, rec.attempts, failed=rec.error, end=time.time())
                )
            return
        step = self._step_span(st, rec, ev.input)
        st.spans.append(step)
        if rec.kind in (StepKind.TOOL, StepKind.LLM):
            st.spans.append(
                self._call_span(
                    st,
                    rec,
                    rec.attempts,
                    failed=rec.error,  # set when the step failed or a fallback replaced it
                    end=rec.ended_at or time.time(),
                )
            )
        if self.metrics is not None and not replay:
            self.metrics.step_recorded(st.run.workflow, rec)
        if len(st.spans) >= _FLUSH_AT:
            batch, st.spans = st.spans, []
            self._schedule(batch, check=st.execution > 1)

    def _error_text(self, error: StructuredError) -> str:
        return self.redactor.truncate(f"{error.type}: {self.redactor.text(error.message)}")

    def _parent(self, st: _Run, key: str) -> int:
        if "/" in key:
            return ids.step_span_id(st.run.id, key.rsplit("/", 1)[0])
        return st.exec_span.span_id

    def _step_span(self, st: _Run, rec: StepRecord, inputs: Any) -> SpanRow:
        r = self.redactor
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
        if inputs is not None and rec.kind is not StepKind.LLM and st.content:
            attrs["keel.step.input"] = r.text(inputs)
        if rec.kind is not StepKind.LLM and st.content:  # trace_content=False: no payloads
            if rec.blob:
                attrs["keel.step.output"] = "[stored out of line; see the journal]"
            elif rec.output is not None and rec.status is StepStatus.OK:
                attrs["keel.step.output"] = r.text(rec.output)
        span = SpanRow(
            span_id=ids.step_span_id(st.run.id, rec.key),
            trace_id=st.trace,
            parent_id=self._parent(st, rec.key),
            run_id=st.run.id,
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
                span.status_message = r.truncate(f"{err.type}: {r.text(err.message)}")
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

    def _call_span(
        self, st: _Run, rec: StepRecord, attempt: int, failed: StructuredError | None, end: float
    ) -> SpanRow:
        """The tool call or model call of one attempt (a grandchild of the run)."""
        begin = st.marks.pop(rec.key, rec.started_at)
        r = self.redactor
        attrs: dict[str, Any] = {"keel.attempt": attempt}
        kind = "INTERNAL"
        if rec.kind is StepKind.TOOL:
            name = f"execute_tool {rec.name}"
            attrs.update(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": rec.name,
                    "gen_ai.tool.call.id": f"{st.run.id}:{rec.key}",
                    "gen_ai.tool.type": "function",
                }
            )
            if rec.output is not None and failed is None and st.content:
                attrs["gen_ai.tool.call.result"] = r.text(rec.output)
        else:
            kind = "CLIENT"
            out = rec.output if isinstance(rec.output, dict) else {}
            model = str(out.get("model") or rec.name)
            provider, _, short = model.partition("/")
            op = "chat"
            model_name = short or provider  # "openai/gpt-4o": provider openai, model gpt-4o
            name = f"{op} {model_name}"  # "{gen_ai.operation.name} {gen_ai.request.model}"
            usage = out.get("usage") or {}
            params = (out.get("request") or {}).get("params") or {}
            attrs.update(
                {
                    "gen_ai.operation.name": op,
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
            if out.get("tried") and len(out["tried"]) > 1:
                attrs["keel.llm.tried"] = [str(t) for t in out["tried"]]
            if st.content and out:
                messages = (out.get("request") or {}).get("messages")
                if messages is not None:
                    attrs["gen_ai.input.messages"] = r.text(messages)
                reply = {"role": "assistant", "content": out.get("content")}
                if out.get("tool_calls"):
                    reply["tool_calls"] = out["tool_calls"]
                attrs["gen_ai.output.messages"] = r.text([reply])
        span = SpanRow(
            span_id=ids.call_span_id(st.run.id, rec.key, attempt),
            trace_id=st.trace,
            parent_id=ids.step_span_id(st.run.id, rec.key),
            run_id=st.run.id,
            name=name,
            kind=kind,
            start_ns=_ns(begin) or 0,
            end_ns=_ns(end),
            status="ERROR" if failed is not None else "OK",
            attributes=attrs,
        )
        if failed is not None:
            attrs["error.type"] = failed.type
            span.status_message = r.truncate(f"{failed.type}: {r.text(failed.message)}")
        return span

    # -- writing --------------------------------------------------------------------------

    def _schedule(self, spans: list[SpanRow], check: bool = True) -> None:
        """Write `spans` soon; `check=False` for a first execution, which replays nothing
        and so cannot duplicate a stored span (it saves a query per run)."""
        if not spans:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._write(spans, check))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, spans: list[SpanRow], check: bool = True) -> None:
        try:
            by_trace: dict[int, list[SpanRow]] = {}
            for s in spans:
                by_trace.setdefault(s.trace_id, []).append(s)
            fresh: list[SpanRow] = []
            for trace, group in by_trace.items():
                have = await self.store.span_ids(ids.hex_trace(trace)) if check else set()
                seen: set[str] = set()
                for s in group:
                    sid = ids.hex_span(s.span_id)
                    if sid not in have and sid not in seen:
                        seen.add(sid)
                        fresh.append(s)
            _link_next_steps(fresh)
            await self.store.write_spans([s.row() for s in fresh])
            if self.export is not None and fresh:
                await self.export.send(fresh)
            await self._maybe_purge()
        except Exception:
            log.exception("writing %d span(s) failed", len(spans))

    async def _maybe_purge(self) -> None:
        now = time.time()
        if now - self._purged_at < 3600 or self.retention_days <= 0:
            return
        self._purged_at = now
        await self.store.purge_spans(int((now - self.retention_days * 86400) * _NS))

    async def drain(self) -> None:
        """Wait for scheduled span writes (called when an App or worker stops)."""
        for st in list(self._runs.values()):  # runs still executing: keep what they did
            batch, st.spans = st.spans, []
            self._schedule(batch)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.export is not None:
            with contextlib.suppress(Exception):
                await self.export.flush()


def _link_next_steps(spans: list[SpanRow]) -> None:
    """`keel.next_step`: the step that followed each one in its scope, where known."""
    steps = [s for s in spans if "keel.step.key" in s.attributes]
    by_parent: dict[int | None, list[SpanRow]] = {}
    for s in steps:
        by_parent.setdefault(s.parent_id, []).append(s)
    for group in by_parent.values():
        group.sort(key=lambda s: s.start_ns)
        for a, b in itertools.pairwise(group):
            a.attributes.setdefault("keel.next_step", b.attributes["keel.step.key"])
