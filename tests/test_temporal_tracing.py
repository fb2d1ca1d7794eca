"""One trace per run on Temporal: temporalio's spans (through `traced(client)`) and
Keel's GenAI spans share the trace Keel derives from the run id, and a workflow that
replays on every task (`max_cached_workflows=0`) leaves no span twice; Keel's own spans
of the run reach the OTLP endpoint once, when the run's end is recorded."""

from __future__ import annotations

import uuid
from typing import Any

import keel
from keel.backends.temporal import Backend, connect, result, serve, start
from keel.backends.temporal.tracing import traced
from keel.observe import ids


def _app(store_url: str) -> keel.App:
    app = keel.App(store_url, llm=keel.llm.ScriptedModel(default="sunny"))

    @app.tool
    async def forecast(city: str) -> str:
        return f"{city}: 21C"

    @app.workflow
    async def weather(ctx: keel.Context, city: str) -> str:
        raw = await ctx.call(forecast, city)
        await ctx.sleep(0.05)  # one more workflow task: one more replay
        return raw + " / " + await ctx.llm.text(f"Summarise: {raw}")

    return app


async def test_temporal_spans_join_keel_trace_once_each(
    temporal_address: str, store_url: str, otlp_http: Any
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    app = _app(store_url)  # after the OTLP environment is set
    backend = Backend(address=temporal_address, task_queue=f"trace-{uuid.uuid4().hex[:8]}")
    client = traced(await connect(backend, app=app), provider.get_tracer("keel-tests"))
    async with serve(app, client, backend, max_cached_workflows=0):
        rid = await start(app, client, backend, "weather", {"city": "Porto"})
        assert await result(app, client, rid) == "Porto: 21C / sunny"
    temporal_spans = memory.get_finished_spans()
    names = sorted(s.name for s in temporal_spans)
    assert {s.context.trace_id for s in temporal_spans} == {ids.trace_id(rid)}, names
    assert names.count("RunWorkflow:weather") == 1, names  # not once per replayed task
    assert names.count("RunActivity:keel.call") == 1, names
    assert names.count("RunActivity:keel.llm") == 1, names
    (started,) = [s for s in temporal_spans if s.name == "StartWorkflow:weather"]
    assert started.parent is not None
    assert started.parent.span_id == ids.step_span_id(rid, "<run>")  # under Keel's root

    keel_spans = await app.trace(rid)
    assert {s.trace_id for s in keel_spans} == {ids.trace_id(rid)}
    keel_names = [s.name for s in keel_spans]
    assert (
        keel_names.count("forecast#0") == 1 and sum(n.startswith("chat ") for n in keel_names) == 1
    )
    # Keel's spans of the run were exported once, when its end was recorded
    received = otlp_http.wait_for(lambda spans: len(spans) >= len(keel_spans))
    assert sorted(r.span_id for r in received) == sorted(
        ids.hex_span(s.span_id) for s in keel_spans
    )
    await result(app, client, rid)  # learning the end again exports nothing more
    assert len(otlp_http.spans()) == len(keel_spans)
    await app.close()
