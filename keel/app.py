"""`keel.App`: registers workflows and tools, starts runs, and hosts the embedded worker."""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel

from keel import config
from keel.backends import resolve as resolve_backend
from keel.engine.hooks import HookSet
from keel.engine.registry import Registry, Tool, ToolDef, WorkflowDef
from keel.engine.runtime import Runtime, Settings
from keel.engine.serde import to_json
from keel.engine.worker import Worker
from keel.errors import (
    ConfigError,
    RunNotFound,
    SignalRefused,
)
from keel.features import drift_service, workflow_monitors
from keel.handle import RunHandle, outcome, record_run, wait_run
from keel.policy.breaker import CircuitBreaker
from keel.policy.fallback import Fallback
from keel.policy.retry import Retry
from keel.secret import SecretSources
from keel.store import RunFilter, Store, open_store
from keel.store.base import RESERVED_SIGNALS
from keel.types import RunInfo, RunStatus, StepRecord

if TYPE_CHECKING:
    from keel.backends.temporal.runs import TemporalRuns
    from keel.codec import PayloadCodec
    from keel.drift.service import Drift
    from keel.embed import Embedder
    from keel.engine.plugins import Background
    from keel.escalations import Escalations
    from keel.memory import Memory
    from keel.observe.redact import Redactor

F = TypeVar("F", bound=Callable[..., Any])


def _caller_locals() -> dict[str, Any] | None:
    """Locals of the code applying `@app.workflow` / `@app.tool` (None at module level),
    so annotations naming classes defined in that function resolve."""
    frame = sys._getframe(2)
    return None if frame.f_locals is frame.f_globals else dict(frame.f_locals)


def _temporal(app: App) -> TemporalRuns | None:
    """The run methods of `app` on Temporal (`App(backend=)`); None: Keel's engine."""
    from keel.backends.temporal.runs import TemporalRuns  # imported late: import keel stays fast

    return None if app.backend is None else TemporalRuns(app)


def _is_redactor(value: Any) -> bool:
    from keel.observe.redact import Redactor

    return isinstance(value, Redactor)


class App:
    """A Keel application: its workflows, tools, store and embedded worker.

    Example:
        app = keel.App()                       # store from KEEL_STORE or .keel/keel.db
        @app.workflow()
        async def hello(ctx: keel.Context, name: str) -> str:
            return await ctx.call(greet, name)
        print(app.run(hello, {"name": "Ada"}))
    """

    def __init__(
        self,
        store: str | Store | None = None,
        *,
        settings: Settings | None = None,
        llm: Any = None,
        notify: Callable[[dict[str, Any]], Any] | str | None = None,
        reviewers: dict[str, set[str] | list[str]] | None = None,
        redactor: Redactor | None = None,
        codec: PayloadCodec | None = None,
        embedder: Embedder | None = None,
        session_store: Any = None,
        backend: Any = None,
    ) -> None:
        url, file_settings = config.load(store if isinstance(store, str) else None)
        self.store_url = store.url if isinstance(store, Store) else url
        self._store: Store | None = store if isinstance(store, Store) else None
        # Every payload stored passes through it (keel.codec); KEEL_ENCRYPTION_KEY sets
        # one with no code change. Resolved now, so a bad key fails at once.
        given = self._store.codec if self._store is not None else None
        if given is not None and codec is not None and codec is not given:
            raise ConfigError(
                "App(codec=...) differs from the codec of the store it was given: open the"
                " store with the codec you want (open_store(url, codec=...)) and pass only it"
            )
        self.codec: PayloadCodec | None = given or codec or config.codec()
        if self._store is not None:
            self._store.codec = self.codec
        self.settings = settings or file_settings
        self.registry = Registry()
        self.hooks = HookSet()
        self._runtime: Runtime | None = None
        self._worker: Worker | None = None
        self._worker_loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, list[asyncio.Future[RunStatus]]] = {}
        self._llm_config = llm
        self._sessions_at: Any = session_store  # ctx.session's backend: given, or opened
        self._sessions: Any = None
        self._gateway: Any = None
        self._tracing: Any = None
        self._notify = notify
        self._drainable: list[Background] = []  # features' background work (features.py)
        self._embedder = embedder  # None: KEEL_EMBEDDER, else the local MiniLM
        self._memory: Memory | None = None
        if redactor is not None and not _is_redactor(redactor):
            raise ConfigError(
                f"redactor= takes a keel.Redactor (keel.observe.Redactor), not "
                f"{type(redactor).__name__}"
            )
        self._redactor_obj: Redactor | None = redactor
        # Where keel.Secret values come from in this app's runs: env and file built in.
        self.secrets = SecretSources()
        # queue -> the people allowed to decide it (unlisted queues: anyone)
        # keel.toml's [keel.reviewers] applies too, so the CLI enforces the same groups.
        groups = reviewers if reviewers is not None else (config.section("reviewers") or {})
        self.reviewers: dict[str, set[str]] = {q: set(v) for q, v in groups.items()}
        # Where runs execute: None is Keel's own engine; a keel.backends.temporal.Backend
        # (or its temporal:// URL, or KEEL_BACKEND) is Temporal (docs/temporal.md).
        self.backend = resolve_backend(backend)

    # -- registration ---------------------------------------------------------------

    @overload
    def workflow(self, fn: F, /) -> F: ...
    @overload
    def workflow(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        state: type[BaseModel] | None = None,
        trace_content: bool = True,
        novelty: Any = None,
        sample: Any = None,
        monitors: list[Any] | None = None,
    ) -> Callable[[F], F]: ...

    def workflow(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        state: type[BaseModel] | None = None,
        trace_content: bool = True,
        novelty: Any = None,
        sample: Any = None,
        monitors: list[Any] | None = None,
    ) -> F | Callable[[F], F]:
        """Register `async def wf(ctx, **inputs)` as a durable workflow.

        `trace_content=False` keeps prompts, responses and tool results out of its traces.
        `monitors=[keel.drift.Distribution("category"), ...]` watch it for drift.
        """
        localns = _caller_locals()

        def register(f: F) -> F:
            body: Any = f
            if novelty is not None:
                from keel.hitl.gate import novelty_gate

                body = novelty_gate(f, novelty, self)
            wf = WorkflowDef(
                fn=body,
                name=name or f.__name__,
                state=state,
                localns=localns,
                trace_content=trace_content,
                novelty=novelty,
                sample=sample,
                monitors=workflow_monitors(name or f.__name__, monitors),
            )
            self.registry.add_workflow(wf)
            f.__keel_workflow__ = wf.name  # type: ignore[attr-defined]
            return f

        return register(fn) if fn is not None else register

    @overload
    def tool(self, fn: Callable[..., Any], /) -> Tool: ...
    @overload
    def tool(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        timeout: float | None = None,
        irreversible: bool = False,
        reconcile: Callable[..., Any] | None = None,
        retry: Retry | None = None,
        fallback: Fallback | None = None,
        validate: Any = None,
        breaker: CircuitBreaker | None = None,
        approval: Any = None,
        keep: type[BaseModel] | None = None,
        **options: Any,
    ) -> Callable[[Callable[..., Any]], Tool]: ...

    def tool(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        timeout: float | None = None,
        irreversible: bool = False,
        reconcile: Callable[..., Any] | None = None,
        retry: Retry | None = None,
        fallback: Fallback | None = None,
        validate: Any = None,
        breaker: CircuitBreaker | None = None,
        approval: Any = None,
        keep: type[BaseModel] | None = None,
        **options: Any,
    ) -> Tool | Callable[[Callable[..., Any]], Tool]:
        """Register a tool: every `ctx.call(tool, ...)` of it is one journaled step.

        `irreversible=True` records an intent (with `keel.current_step().idempotency_key`)
        before each call. If the worker dies before the result is recorded, the call is
        never re-run blindly: `reconcile(idempotency_key, *args, **kwargs)` returns the
        result the effect had, or raises `keel.EffectNotApplied` to allow a re-run;
        without a hook the step fails with `keel.OutcomeUnknown`.

        `retry`, `timeout` (per attempt), `validate`, `breaker` and `fallback` declare how
        the tool recovers; `tool.with_options(...)` overrides them per call site.
        `keep=Schema` (a Pydantic model) cuts the output to Schema's fields before it
        returns, the full output journaled out of line for audit (keel.engine.keep).
        """
        localns = _caller_locals()

        def register(f: Callable[..., Any]) -> Tool:
            tdef = ToolDef(
                fn=f,
                name=name or f.__name__,
                timeout=timeout,
                irreversible=irreversible,
                reconcile=reconcile,
                retry=retry,
                fallback=fallback,
                validate=validate,
                breaker=breaker,
                approval=approval,
                keep=keep,
                options=options,
                localns=localns,
            )
            self.registry.add_tool(tdef)
            return Tool(tdef)

        return register(fn) if fn is not None else register

    # -- plumbing -------------------------------------------------------------------

    @property
    def escalations(self) -> Escalations:
        """Failures routed to a person: `list`, `get`, `resolve`, `reject`."""
        from keel.escalations import Escalations

        return Escalations(self)

    def _wake_worker(self) -> None:
        if self._worker is not None:
            try:
                if self._worker_loop is asyncio.get_running_loop():
                    self._worker.notify()
            except RuntimeError:
                pass

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.store_url, self.codec, config.store_options())
        return self._store

    @property
    def session_store(self) -> Any:
        """Where `ctx.session` keeps values: `App(session_store=)`, KEEL_SESSION_STORE
        (a redis:// URL), else this app's store (a keel.store SessionStateStore)."""
        if self._sessions is None:
            from keel.memory.session import open_session_store

            where = self._sessions_at or self.settings.session_store
            self._sessions = open_session_store(where, self.store)
        return self._sessions

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(
                self.store,
                self.registry,
                self.hooks,
                self.settings,
                on_settled=self._settled,
                render=self._short_redacted,
                secrets=self.secrets,
            )
            from keel.features import attach

            self._tracing = attach(self, self._runtime, self._notify)
        return self._runtime

    @property
    def memory(self) -> Memory:
        """Long-term memory: `add`, `add_many`, `search`, `forget`, `supersede` (docs/memory.md)."""
        if self._memory is None:
            from keel.features import long_term_memory

            self._memory = long_term_memory(self, self._embedder)
        return self._memory

    @functools.cached_property
    def drift(self) -> Drift:
        """Drift monitors: `report`, `series`, `on_alert`, `backfill` (docs/drift.md)."""
        return drift_service(self)

    @property
    def approvals(self) -> Any:
        """Approvals, low-confidence and novelty reviews: `list/get/approve/reject/edit`."""
        from keel.hitl.api import Approvals

        return Approvals(self)

    @property
    def reviews(self) -> Any:
        """The sampled-review queue: `list/get/verdict/export`."""
        from keel.hitl.api import Reviews

        return Reviews(self)

    @property
    def redactor(self) -> Redactor:
        """What masks secrets in everything Keel shows or exports of a payload: traces,
        OTLP, logs, error messages, notifications, the CLI's and the console's redacted
        views. `keel.App(redactor=keel.Redactor(...))`, else keel.toml's `[keel.redact]`
        (the defaults without one)."""
        if self._redactor_obj is None:
            from keel.observe.redact import Redactor

            self._redactor_obj = Redactor.from_config(
                config.section("redact"), max_chars=self.settings.trace_max_chars
            )
        return self._redactor_obj

    def _short_redacted(self, value: Any) -> str:
        text: str = self.redactor.text(value)
        return text if len(text) <= 300 else text[:299] + "…"

    async def trace(self, run_id: str) -> list[Any]:
        """The run's spans (`keel.observe.spans.SpanRow`), oldest first."""
        from keel.observe import ids
        from keel.observe.spans import SpanRow

        run = await self.get_run(run_id)
        _ = self.runtime  # tracing is attached with the runtime
        if self._tracing is None:
            rows = await self.store.load_spans(ids.hex_trace(ids.trace_id(run_id)))
            return [SpanRow.from_row(r) for r in rows]
        spans: list[Any] = await self._tracing.spans(run)
        return spans

    @property
    def gateway(self) -> Any:
        """The `keel.llm.Gateway` behind `ctx.llm` (None when no model is configured)."""
        import os

        if self._gateway is None:
            chosen = self._llm_config or config.section("llm") or os.environ.get("KEEL_MODEL")
            if chosen:
                from keel.llm.gateway import Gateway

                self._gateway = Gateway.of(chosen)
        return self._gateway

    def _settled(self, run_id: str, status: RunStatus) -> None:
        for fut in self._waiters.pop(run_id, []):
            if not fut.done():
                fut.set_result(status)

    def _warm_llm(self) -> None:
        """Import LiteLLM in the background once a worker starts (it takes seconds), so
        the first model call does not pay for it. `import keel` itself never does."""
        if self.gateway is not None and not getattr(self, "_warming", False):
            import threading

            from keel.llm._litellm import litellm

            self._warming = True
            threading.Thread(target=litellm, name="keel-litellm-import", daemon=True).start()

    async def _embedded(self) -> Worker:
        loop = asyncio.get_running_loop()
        if self._worker is not None and self._worker.fault is not None:
            await self.stop_worker()  # it stopped on a store fault: try afresh
        if self._worker is None or self._worker_loop is not loop:
            self._warm_llm()
            self._worker = Worker(self.runtime, ids=set())
            self._worker_loop = loop
            await self._worker.start()
        return self._worker

    def worker(self, concurrency: int | None = None) -> Worker:
        """A worker for any run of this app's workflows (what `keel worker` runs)."""
        self._warm_llm()
        return Worker(self.runtime, concurrency=concurrency)

    # -- runs -----------------------------------------------------------------------

    async def start(
        self,
        workflow: Any,
        input: Any = None,
        *,
        id: str | None = None,
        execute: bool = True,
        tenant: str | None = None,
        session: str | None = None,
    ) -> RunHandle:
        """Record a run and start it; `session` is the `ctx.session` it shares with other
        runs (None: a session of its own, its run id).

        Starting an existing `id` again is idempotent: with no input, or the same input,
        it returns that run; a different input (or session) is refused (`keel.InputError`).
        On Temporal (`App(backend=)`) a Temporal worker executes it: `execute` is moot.
        """
        wf = self.registry.workflow(workflow)
        if (t := _temporal(self)) is not None:
            return await t.start(wf, input, id, tenant, session)
        info, created = await record_run(self, wf, input, id, tenant, session)
        if execute and not info.status.terminal:
            (await self._embedded()).watch(info.id)
        # A run just created is PENDING: its first wait need not read it back.
        return RunHandle(self, info.id, wf.name, known=info if created else None)

    def run(
        self,
        workflow: Any,
        input: Any = None,
        *,
        id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Start a run and wait for its result (blocking convenience around `start`)."""

        async def go() -> Any:
            try:
                handle = await self.start(workflow, input, id=id)
                return await handle.result(timeout)
            finally:
                await self.stop_worker()

        return asyncio.run(go())

    def handle(self, run_id: str, workflow: str = "") -> RunHandle:
        return RunHandle(self, run_id, workflow)

    async def get_run(self, run_id: str) -> RunInfo:
        t = _temporal(self)  # on Temporal: its status as Temporal has it now
        info = await (t.get_run(run_id) if t else self.store.get_run(run_id))
        if info is None:
            raise RunNotFound(f"no run {run_id!r} in {self.store_url}", run_id=run_id)
        return info

    async def list_runs(
        self,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        since: float | None = None,
        until: float | None = None,
        session: str | None = None,
    ) -> list[RunInfo]:
        """Runs newest first; `since`/`until` bound created_at (epoch seconds, until exclusive)."""
        st = RunStatus(status.upper()) if isinstance(status, str) else status
        flt, t = RunFilter(st, workflow, since, until, session, limit), _temporal(self)
        return await (t.list_runs(flt) if t else self.store.list_runs(flt))

    async def steps(self, run_id: str) -> list[StepRecord]:
        """The run's journal, in execution order."""
        info, t = await self.get_run(run_id), _temporal(self)  # Temporal: + history's steps
        records = await (t.steps(info) if t else self.store.load_steps(run_id))
        return sorted(records, key=lambda r: (r.started_at, r.key))

    async def signal(
        self, run_id: str, name: str, payload: Any = None, *, queue: bool = False
    ) -> bool:
        """Send signal `name` to a run waiting for it (`ctx.wait_for(name)`): it resumes.

        Refused with `keel.SignalRefused` (saying what the run waits for) when the run
        has ended or is not waiting for `name`. `queue=True` keeps the signal for the
        run's next `ctx.wait_for(name)` instead, e.g. when the run has not reached its
        wait yet. Returns True if the run was waiting for it, False if it was queued.

        Example:
            await app.signal(run_id, "approve", {"by": "ada"})
        """
        if name.startswith(RESERVED_SIGNALS):
            raise SignalRefused(
                f"signal {name!r} is Keel's own (a person's decision): decide it with"
                " keel approvals / keel escalations (app.approvals, app.escalations)",
                run_id=run_id,
                signal=name,
            )
        data = to_json(payload, what=f"signal {name!r} payload")
        t = _temporal(self)
        if t is not None and (sent := await t.signal(run_id, name, payload, queue)) is not None:
            return sent
        before = await self.store.send_signal(
            run_id, name, data, time.time(), only_if_waiting=not queue
        )
        self._wake_worker()
        return before.status is RunStatus.WAITING and name in before.waiting_on

    async def cancel(self, run_id: str) -> RunInfo:
        if (t := _temporal(self)) is not None and (ended := await t.cancel(run_id)):
            return ended
        info = await self.store.cancel_run(run_id, time.time())
        self._settled(run_id, info.status)
        return info

    async def _wait(
        self,
        run_id: str,
        done: Callable[[RunStatus], bool],
        timeout: float | None,
        known: RunInfo | None = None,
    ) -> RunInfo:
        """The run once `done(status)` (`keel.handle.wait_run`)."""
        return await wait_run(self, run_id, done, timeout, known)

    def _outcome(self, info: RunInfo) -> Any:
        return outcome(self, info)

    def _resumes_here(self, run_id: str) -> bool:
        """Whether this process's embedded worker watches `run_id` (and so resumes it)."""
        w = self._worker
        return w is not None and w.ids is not None and run_id in w.ids

    async def stop_worker(self, grace: float | None = None) -> None:
        """Stop the embedded worker: at once (runs in flight go back to the queue), or
        with `grace` seconds for the steps in flight to finish first (`Worker.drain`)."""
        if self._worker is not None:
            if grace is None:
                await self._worker.stop()
            else:
                await self._worker.drain(grace)
            self._worker = None
            self._worker_loop = None
        for part in self._drainable:
            await part.drain()
        if self._tracing is not None:
            await self._tracing.drain()

    async def close(self, grace: float | None = None) -> None:
        """Stop the embedded worker (its runs go back to the queue) and close the store.

        `grace` drains the worker first: steps in flight get that many seconds to finish.
        """
        try:
            await self.stop_worker(grace)
            if self._gateway is not None:
                await self._gateway.close()
        finally:  # even when draining hit a store fault
            sessions, self._sessions = self._sessions, None
            if sessions is not None and sessions is not self._store:
                await sessions.close()  # a Redis pool; Keel's store is closed below
            if self._store is not None:
                await self._store.close()
                self._store = None
                self._runtime = None
                self._memory = None

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
