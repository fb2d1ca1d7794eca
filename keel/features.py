"""How an App plugs the feature layers into the engine: model calls (`ctx.llm`), session
state (`ctx.session`), people (approval gates, reviews, sampling, notifications), drift
monitors and tracing.

The engine offers typed doors (`keel.engine.plugins`: `ModelCalls`, `People`) and
lifecycle hooks, and knows nothing of what fills them; this module is the one place
that fills them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.app import App
    from keel.drift.service import Drift
    from keel.engine.runtime import Runtime


def attach(app: App, rt: Runtime, notify: Any) -> Any:
    """Wire every feature of `app` into its runtime; returns its tracing hook (or None)."""
    from keel.observe.logs import guard_keel_loggers

    rt.features.models = lambda ctx: _llm(app, rt, ctx)
    rt.features.memory = lambda ctx: _ctx_memory(app, ctx)
    rt.features.session = lambda ctx: _session(app, ctx)
    _register_extraction(app)
    guard_keel_loggers(app.redactor)
    _attach_people(app, rt, notify)
    _attach_drift(app)
    if not app.settings.tracing:
        return None
    tracing = _tracing(app)
    app.hooks.add(tracing)
    return tracing


def _llm(app: App, rt: Runtime, ctx: Any) -> Any:
    gateway = app.gateway
    if gateway is None:
        raise ConfigError(
            "this app has no model configured: pass keel.App(llm=keel.llm.Gateway(...)) "
            "or a keel.llm.ScriptedModel, or set KEEL_MODEL"
        )
    from keel.llm.facade import LLM

    return LLM(ctx, gateway, store=app.store, people=rt.features.people)


def long_term_memory(app: App, embedder: Any) -> Any:
    """`app.memory`: long-term memory over the app's store with its embedder."""
    from keel.memory import Memory

    return Memory(app.store, embedder)


def _ctx_memory(app: App, ctx: Any) -> Any:
    from keel.memory.journaled import JournaledMemory

    async def start(run_id: str, payload: dict[str, Any], session: str | None) -> str:
        # In this process when it has an embedded worker (app.run, app.start), else
        # queued for the workers, which all host the extraction workflow.
        handle = await app.start(
            EXTRACTION, payload, id=run_id, execute=app._worker is not None, session=session
        )
        return handle.id

    return JournaledMemory(ctx, app.memory, start)


EXTRACTION = "keel.memory.extract"  # keel.memory.extract.WORKFLOW, without importing it


def _register_extraction(app: App) -> None:
    """The workflow `ctx.memory.extract` starts, on every App (so every worker hosts it)."""
    if EXTRACTION not in app.registry.workflows:
        from keel.memory.extract import extraction_workflow

        app.workflow(name=EXTRACTION)(extraction_workflow(lambda: app.store))


def _session(app: App, ctx: Any) -> Any:
    from keel.memory.session import SessionState

    return SessionState(ctx, app.session_store)


def _attach_people(app: App, rt: Runtime, notify: Any) -> None:
    from keel.hitl.gate import Checkpoints
    from keel.hitl.sampling import Sampler

    rt.features.people = Checkpoints(app)
    sampler = Sampler(app)
    app.hooks.add(sampler)
    app._drainable.append(sampler)
    if notify is not None:
        from keel.hitl.notify import Notifier

        notifier = Notifier(notify, redact=app.redactor.value)
        app.hooks.add(notifier)
        app._drainable.append(notifier)


def workflow_monitors(workflow: str, monitors: Any) -> tuple[Any, ...]:
    """`@app.workflow(monitors=...)` checked (keel.drift.monitors.check_monitors)."""
    if monitors is None:
        return ()
    from keel.drift.monitors import check_monitors

    return check_monitors(workflow, monitors)


def drift_service(app: App) -> Drift:
    """`app.drift`: drift monitoring of the app's workflows (keel.drift.service)."""
    from keel.drift.service import Drift

    return Drift(app)


def _attach_drift(app: App) -> None:
    from keel.observe.metrics import sdk_meter_provider_installed

    observer = app.drift.observer
    if observer.metrics is None and sdk_meter_provider_installed():
        from keel.drift.metrics import DriftMetrics

        observer.metrics = DriftMetrics()
    app.hooks.add(observer)
    app._drainable.append(observer)


def _tracing(app: App) -> Any:
    from keel.observe.export import OTLPExport
    from keel.observe.metrics import Metrics, MetricsHook, sdk_meter_provider_installed
    from keel.observe.tracer import Tracing

    if sdk_meter_provider_installed():  # metrics cost a hook call per step: only when read
        app.hooks.add(MetricsHook(Metrics()))
    return Tracing(
        app.store,
        app.registry,
        retention_days=app.settings.trace_retention_days,
        purge_every=app.settings.retention_interval,
        redactor=app.redactor,
        export=OTLPExport.from_env(),
    )
