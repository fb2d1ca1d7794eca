"""One trace per run on Temporal: Temporal's own spans inside the trace Keel gives the run.

Keel derives a run's trace id from its run id (keel.observe.ids), and builds the spans
of its steps from the journal, which on Temporal the activities write once per attempt:
a replaying worker writes nothing, so no span is ever duplicated. `traced(client)`
adds temporalio's OpenTelemetry interceptor to a client (and so to the workers it
serves), and every run started through it starts inside Keel's trace: the
StartWorkflow, RunWorkflow, StartActivity and RunActivity spans hang under the run's
root span, next to Keel's GenAI spans. temporalio makes workflow spans only when not
replaying. When the run ends, Keel exports its own spans of the run (OTLP, as
configured by the OTEL_* variables) once.

Example:
    client = traced(await connect(backend, app=app), tracer_provider.get_tracer("keel"))
    async with serve(app, client, backend):
        run_id = await start(app, client, backend, "triage", {"ticket": t})
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from keel.observe import ids

if TYPE_CHECKING:
    from temporalio.client import Client

    from keel.app import App
    from keel.types import RunInfo

_log = logging.getLogger("keel.temporal")


def traced(client: Client, tracer: Any = None) -> Client:
    """A client like `client` whose runs, workflows and activities are traced with
    OpenTelemetry (`tracer`; default the global provider's), in Keel's trace per run.

    Example:
        client = traced(await connect(backend, app=app))
    """
    from temporalio.client import Client as TemporalClient
    from temporalio.contrib.opentelemetry import TracingInterceptor

    config = client.config()
    if any(isinstance(i, TracingInterceptor) for i in config["interceptors"]):
        return client
    config["interceptors"] = [*config["interceptors"], TracingInterceptor(tracer)]
    return TemporalClient(**config)


def _is_traced(client: Client) -> bool:
    interceptors = client.config()["interceptors"]
    return any(type(i).__name__ == "TracingInterceptor" for i in interceptors)


@contextlib.contextmanager
def in_run_trace(client: Client, run_id: str) -> Iterator[None]:
    """While starting run `run_id` through a traced client: the current span is the
    run's root in Keel's trace, so Temporal's spans join it."""
    if not _is_traced(client):
        yield
        return
    from opentelemetry import context, trace

    root = trace.SpanContext(
        trace_id=ids.trace_id(run_id),
        span_id=ids.step_span_id(run_id, "<run>"),
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(root)))
    try:
        yield
    finally:
        context.detach(token)


async def export_ended(app: App, run: RunInfo) -> None:
    """Send Keel's spans of an ended Temporal run to the OTLP endpoint, if one is set
    (once: called when Keel's store records the end)."""
    from keel.observe.export import OTLPExport

    export = OTLPExport.from_env()
    if export is None:
        return
    from keel.observe.tracer import Tracing

    try:
        reader = Tracing(app.store, app.registry, redactor=app.redactor)
        spans = await reader.spans(run)
        await export.send(spans)
    except Exception:  # the trace stays readable in Keel's store (keel trace)
        _log.exception("exporting the spans of Temporal run %s failed", run.id)


__all__ = ["export_ended", "in_run_trace", "traced"]
