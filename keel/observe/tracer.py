"""Tracing: one span per execution and a root per run are written as runs execute;
the spans of steps are built from the journal (keel.observe.build) when a trace is read
or exported. So a step appears exactly once however often it was replayed, and tracing
costs nearly nothing while the run executes. An execution whose worker died wrote no
span: the next execution to end writes one reconstructed from the journal
(keel.observe.executions), and reads make it on the fly until then."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from keel.engine.hooks import Hooks
from keel.errors import StoreError
from keel.observe import executions, ids
from keel.observe.build import SpanBuilder
from keel.observe.redact import Redactor
from keel.observe.spans import SpanRow
from keel.types import RunInfo, RunStatus, StepKind, StepRecord, StructuredError

if TYPE_CHECKING:
    from keel.engine.registry import Registry
    from keel.observe.export import OTLPExport
    from keel.store.base import Store

log = logging.getLogger("keel.observe")
_NS = 1_000_000_000
_FLUSH_AT = 512
_SKIP = (StepKind.VALUE,)
WATERMARK = "keel.exported_until_ns"  # on stored execution spans: steps sent up to here


def _ns(ts: float | None) -> int | None:
    return None if ts is None else int(ts * _NS)


@dataclass
class _Run:
    run: RunInfo
    trace: int
    execution: int
    exec_span: SpanRow
    spans: list[SpanRow] = field(default_factory=list)
    content: bool = True


class Tracing(Hooks):
    """The engine hook that records a trace for every run (see keel/observe)."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        retention_days: float = 7.0,
        purge_every: float = 3600.0,  # seconds, like the run retention's sweeps
        redactor: Redactor | None = None,
        export: OTLPExport | None = None,
        metrics: Any = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.retention_days = retention_days
        self.purge_every = purge_every
        self.redactor = redactor or Redactor()
        self.export = export
        self.metrics = metrics
        self._runs: dict[str, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: list[SpanRow] = []
        self._flusher: asyncio.Task[None] | None = None
        self._writing: dict[str, asyncio.Task[None]] = {}  # run id -> its latest write
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
        if self.export is None and st.execution == 1 and status is not None and status.terminal:
            # A run that ended in its first execution: its record says everything the
            # execution and root spans would, so they are built on read, not written.
            self._schedule_purge()
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
            st.spans.append(self._root(st.run, st.execution, status, error, now))
        self._schedule(st, st.spans)

    def _root(
        self,
        run: RunInfo,
        executions: int,
        status: RunStatus,
        error: StructuredError | None,
        end_ns: int,
    ) -> SpanRow:
        """The trace root: the workflow invocation, from the run's creation to its end."""
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": run.workflow,
            "keel.run.id": run.id,
            "keel.run.status": status.value,
            "keel.run.executions": executions,
            "keel.run.input": self.redactor.text(run.input),
        }
        if run.tenant:
            attrs["keel.tenant"] = run.tenant
        root = SpanRow(
            span_id=ids.step_span_id(run.id, "<run>"),
            trace_id=ids.trace_id(run.id),
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

    def _error_text(self, error: StructuredError) -> str:
        return self.redactor.truncate(f"{error.type}: {self.redactor.text(error.message)}")

    # -- writing --------------------------------------------------------------------------

    def _schedule(self, st: _Run, spans: list[SpanRow]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.export is not None or st.execution > 1:
            # Exporting, and reconstructing the spans of executions that died, read the
            # run's stored spans: one task per run, in execution order (an export reads
            # the watermark the previous one stored; a check for missing spans needs
            # this process's earlier ones written).
            prev = self._writing.get(st.run.id)
            task = loop.create_task(self._write(st, spans, prev))
            self._writing[st.run.id] = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(functools.partial(self._written, st.run.id))
            return
        self._enqueue(spans, loop)

    def _enqueue(self, spans: list[SpanRow], loop: asyncio.AbstractEventLoop) -> None:
        """Local only: rows of every run that ended since the last flush go in one
        transaction, so many short runs do not pay a commit each."""
        self._pending.extend(spans)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
            self._tasks.add(self._flusher)
            self._flusher.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the runs finishing in this loop turn join the batch
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.store.write_spans([s.row() for s in batch])
                await self._maybe_purge()
            except StoreError as exc:  # reported once by whoever runs the work, not here
                log.info("writing %d span(s) failed: %s", len(batch), exc.message)
            except Exception:
                log.exception("writing %d span(s) failed", len(batch))

    def _written(self, run_id: str, task: asyncio.Task[None]) -> None:
        if self._writing.get(run_id) is task:
            del self._writing[run_id]

    async def _write(
        self, st: _Run, spans: list[SpanRow], after: asyncio.Task[None] | None = None
    ) -> None:
        if after is not None:
            await asyncio.wait([after])
        flusher = self._flusher
        if flusher is not None and not flusher.done():  # this run's earlier spans, stored
            await asyncio.wait([flusher])
        stored: list[SpanRow] | None = None
        records: list[StepRecord] | None = None
        try:
            trace = ids.hex_trace(st.trace)
            stored = [SpanRow.from_row(r) for r in await self.store.load_spans(trace)]
            have = executions.numbers([*stored, *spans])
            if executions.missing(have, st.execution - 1):  # a worker died: its span
                records = await self.store.load_steps(st.run.id)
                made = executions.reconstruct(
                    st.run, have, records, st.execution - 1, self._cutoff_ns()
                )
                spans = [*made, *spans]
        except Exception:  # unread, nothing is exported: the next execution sends it
            log.exception("reading the stored spans of run %s failed", st.run.id)
            stored = None
        if self.export is not None:
            try:
                if stored is not None:
                    await self._export(st, spans, stored, records)
            except Exception:  # the spans stay unmarked: the next execution sends them
                log.exception("exporting the spans of run %s failed", st.run.id)
            try:
                await self.store.write_spans([s.row() for s in spans])
                await self._maybe_purge()
            except StoreError as exc:  # reported once by whoever runs the work, not here
                log.info("writing the spans of run %s failed: %s", st.run.id, exc.message)
            except Exception:
                log.exception("writing %d span(s) of run %s failed", len(spans), st.run.id)
        else:
            self._enqueue(spans, asyncio.get_running_loop())

    async def _export(
        self,
        st: _Run,
        spans: list[SpanRow],
        stored: list[SpanRow],
        records: list[StepRecord] | None,
    ) -> None:
        """Send what is new since the last execution that exported: this execution's
        steps, and those of any execution that died before it could export them (with
        its reconstructed span), or whose export failed (with its stored span)."""
        assert self.export is not None
        # The watermark is this execution's end: every step that ended by then is
        # journaled (a resumed execution may already be recording steps; those are
        # the next export's), and each step falls in exactly one export's window.
        until = st.exec_span.end_ns or time.time_ns()
        since = max((int(s.attributes.get(WATERMARK, 0)) for s in stored), default=0)
        if records is None:
            records = await self.store.load_steps(st.run.id)
        window = [r for r in records if since < (_ns(r.ended_at) or 0) <= until]
        execs = [s for s in [*stored, *spans] if "keel.execution" in s.attributes]
        ours = {s.span_id for s in spans}
        unsent = [  # stored by an execution whose export failed
            s
            for s in stored
            if "keel.execution" in s.attributes
            and (s.end_ns or 0) > since
            and s.span_id not in ours
        ]
        builder = SpanBuilder(st.run.id, self.redactor, st.content, execs)
        if await self.export.send([*builder.spans(window), *unsent, *spans]):
            for s in spans:
                if "keel.execution" in s.attributes and s.end_ns is not None:
                    s.attributes[WATERMARK] = until if s is st.exec_span else s.end_ns

    def _cutoff_ns(self) -> int:
        """Spans that ended before this are purged by trace retention."""
        if self.retention_days <= 0:
            return 0
        return int((time.time() - self.retention_days * 86400) * _NS)

    def _schedule_purge(self) -> None:
        if time.time() - self._purged_at < self.purge_every or self.retention_days <= 0:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._maybe_purge())
        except RuntimeError:
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _maybe_purge(self) -> None:
        now = time.time()
        if now - self._purged_at < self.purge_every or self.retention_days <= 0:
            return
        self._purged_at = now
        await self.store.purge_spans(self._cutoff_ns())

    async def drain(self) -> None:
        """Wait for scheduled span writes (called when an App or worker stops)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.export is not None:
            with contextlib.suppress(Exception):
                await self.export.flush()

    # -- reading --------------------------------------------------------------------------

    async def spans(self, run: RunInfo) -> list[SpanRow]:
        """The run's whole trace: stored execution and root spans, the spans of its steps,
        and the execution spans the store lacks (an execution killed mid-run, one in
        progress in another process), made from the journal."""
        await self.drain()
        trace = ids.hex_trace(ids.trace_id(run.id))
        stored = [SpanRow.from_row(r) for r in await self.store.load_spans(trace)]
        records = await self.store.load_steps(run.id)
        wf = self.registry.workflows.get(run.workflow)
        content = getattr(wf, "trace_content", True) if wf else True
        execs = [s for s in stored if "keel.execution" in s.attributes]
        live = self._runs.get(run.id)
        if live is not None:  # the execution in progress in this process: open, like the run
            execs.append(replace(live.exec_span, attributes=dict(live.exec_span.attributes)))
        if not execs and run.status.terminal and run.attempts <= 1:
            # ended in one execution: its execution span is the run's record
            execs = [self._single_execution(run)]
        else:
            execs += self._unwritten(run, execs, records, live is not None)
        stored += [s for s in execs if s not in stored]
        builder = SpanBuilder(run.id, self.redactor, content, execs)
        steps = builder.spans(records)
        steps += builder.open_parents(steps)
        if not any(s.parent_id is None for s in stored):
            stored.append(self._synthesized_root(run, has_executions=bool(execs)))
        return sorted([*stored, *steps], key=lambda s: (s.start_ns, s.name))

    def _unwritten(
        self, run: RunInfo, execs: list[SpanRow], records: list[StepRecord], live: bool
    ) -> list[SpanRow]:
        """Spans of the run's executions that are neither stored nor live here."""
        have = executions.numbers(execs)
        made: list[SpanRow] = []
        running = run.status is RunStatus.RUNNING
        if running and not live and run.attempts >= 1 and run.attempts not in have:
            made.append(executions.in_progress(run, have))  # executing in another process
            have[run.attempts] = made[-1]
        if run.status.terminal and not have:
            return made  # nothing was stored for this run: tracing was off, or purged
        upto = run.attempts - 1 if running else run.attempts
        return made + executions.reconstruct(run, have, records, upto, self._cutoff_ns())

    def _single_execution(self, run: RunInfo) -> SpanRow:
        end = _ns(run.ended_at or run.updated_at) or 0
        span = SpanRow(
            span_id=ids.execution_span_id(run.id, max(1, run.attempts)),
            trace_id=ids.trace_id(run.id),
            parent_id=ids.step_span_id(run.id, "<run>"),
            run_id=run.id,
            name=f"execute {run.workflow}",
            kind="INTERNAL",
            start_ns=_ns(run.created_at) or 0,
            end_ns=end,
            status="ERROR" if run.status is RunStatus.FAILED else "OK",
            attributes={
                "keel.run.id": run.id,
                "keel.execution": max(1, run.attempts),
                "keel.run.resumed": False,
                "gen_ai.workflow.name": run.workflow,
                "keel.run.status": run.status.value,
            },
        )
        if run.error is not None:
            span.status_message = self._error_text(run.error)
        return span

    def _synthesized_root(self, run: RunInfo, has_executions: bool) -> SpanRow:
        """The root of a run that has no stored root: open (end None, UNSET) while the run
        is running or waiting; for an ended run (traced with tracing off, or its last
        execution died before writing its spans) closed, from the run's record."""
        if run.status.terminal:
            end = _ns(run.ended_at or run.updated_at) or 0
            root = self._root(run, run.attempts, run.status, run.error, end)
            note = "no execution spans stored (tracing was off, or trace retention purged them)"
        else:
            root = SpanRow(
                span_id=ids.step_span_id(run.id, "<run>"),
                trace_id=ids.trace_id(run.id),
                parent_id=None,
                run_id=run.id,
                name=f"invoke_workflow {run.workflow}",
                kind="INTERNAL",
                start_ns=_ns(run.created_at) or 0,
                end_ns=None,
                status="UNSET",
                attributes={
                    "gen_ai.operation.name": "invoke_workflow",
                    "gen_ai.workflow.name": run.workflow,
                    "keel.run.id": run.id,
                    "keel.run.status": run.status.value,
                },
            )
            note = "no execution spans stored yet (tracing off, or no execution has ended)"
        root.attributes["keel.root.synthesized"] = True
        if not has_executions:  # say so: `keel trace` shows the status message
            root.attributes["keel.trace.note"] = note
            root.status_message = "; ".join(m for m in (root.status_message, note) if m)
        return root
