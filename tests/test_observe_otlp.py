"""OTLP export to a real receiver started by the test (HTTP/protobuf and gRPC).

The App reads the standard OTEL_EXPORTER_OTLP_* variables when its runtime starts;
the receiver decodes each ExportTraceServiceRequest as a collector would. Message
content (prompts, responses, tool arguments and results) leaves the process only
with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import keel
from keel.engine.runtime import Settings
from keel.llm import Gateway, ScriptedModel
from keel.observe import ids
from keel.observe.spans import CONTENT_ATTRIBUTES, SCHEMA_URL
from keel.types import RunStatus
from tests.faults import Always, Faults, Schedule
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)
PROMPT = "PROMPT-SENTINEL-7731"
REPLY = "REPLY-SENTINEL-5521"
TOOL_ARG = "TOOLARG-SENTINEL-1187"
TOOL_RESULT = "TOOLRESULT-SENTINEL-9043"
SENTINELS = (PROMPT, REPLY, TOOL_ARG, TOOL_RESULT)
ASKED = f"{PROMPT}: {TOOL_ARG}"  # what the workflow asks the model
WATERMARK = "keel.exported_until_ns"


@pytest.fixture(params=["http", "grpc"])
def receiver(request: pytest.FixtureRequest) -> Any:
    """The OTLP receiver of either protocol, with the environment pointing at it."""
    return request.getfixturevalue(f"otlp_{request.param}")


def build(store_url: str) -> tuple[keel.App, Any]:
    model = ScriptedModel(lambda m: f"Answer: {REPLY}")
    app = keel.App(
        store_url,
        settings=Settings(poll_interval=0.02),
        llm=Gateway({"m": model}, retry=keel.Retry(attempts=1)),
    )
    faults = Faults()
    flaky = faults.tool(
        app, "flaky", Schedule("503", "ok"), retry=keel.Retry(attempts=3, backoff=0.001)
    )
    enrich = faults.tool(
        app,
        "enrich",
        Always("503"),
        retry=keel.Retry(attempts=1),
        fallback=keel.Fallback.degrade(default=None),
    )

    @app.tool
    async def fetch(ref: str) -> dict[str, Any]:
        return {"ref": ref, "note": TOOL_RESULT}

    @app.workflow
    async def exported(ctx: keel.Context, case: str) -> list[Any]:
        doc = await ctx.call(fetch, TOOL_ARG)
        answer = await ctx.llm.text(f"{PROMPT}: {doc['ref']}", temperature=0.0)
        go = await ctx.wait_for("go")
        again = await ctx.call(flaky, go)
        extra = await ctx.call(enrich, case)
        return [answer, again, extra]

    return app, model


@pytest.mark.parametrize("capture", [False, True], ids=["no-content", "content"])
async def test_spans_arrive_at_the_otlp_receiver(
    receiver: Any, store_url: str, monkeypatch: pytest.MonkeyPatch, capture: bool
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "keel-tests")
    if capture:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    app, model = build(store_url)  # after the environment is set
    try:
        handle = await app.start("exported", {"case": "c-1"})
        assert (await handle.settle(RESULT)).status is RunStatus.WAITING
        await handle.signal("go", "second")
        assert await handle.result(RESULT) == [f"Answer: {REPLY}", "second", None]
        stored = await app.trace(handle.id)  # drains: written and exported
    finally:
        await app.close()

    received = receiver.wait_for(lambda spans: len(spans) >= len(stored))
    # exactly the trace `app.trace` builds from the journal: no span twice, though
    # execution 2 replayed fetch#0 and llm:text#0 (and was signalled, and ended, before
    # execution 1's export may have finished)
    assert sorted(r.span_id for r in received) == sorted(ids.hex_span(s.span_id) for s in stored)
    # one export per execution: the first sends what it did, the second the rest
    first, second = receiver.batches()
    assert sorted(r.name for r in first) == sorted(
        ["execute exported", "fetch#0", "execute_tool fetch", "llm:text#0", f"chat {model.name}"]
    )
    assert {r.name for r in second} >= {"invoke_workflow exported", "execute exported (resumed)"}
    if receiver.protocol == "http/protobuf":
        assert set(receiver.paths) == {"/v1/traces"}
    # the watermark is stored on each execution span (the execution's end); it is
    # bookkeeping, never sent
    local_execs = {
        s.attributes["keel.execution"]: s for s in stored if "keel.execution" in s.attributes
    }
    assert sorted(local_execs) == [1, 2]
    for e in local_execs.values():
        assert e.attributes[WATERMARK] == e.end_ns
    assert not any(WATERMARK in r.attributes for r in received)

    trace_hex = ids.hex_trace(ids.trace_id(handle.id))
    by_id = {r.span_id: r for r in received}
    for s in stored:
        r = by_id[ids.hex_span(s.span_id)]
        assert r.trace_id == trace_hex
        assert r.name == s.name
        assert r.parent_id == (ids.hex_span(s.parent_id) if s.parent_id else None)
        assert r.kind == s.kind
        assert r.status == s.status
        assert r.links == [ids.hex_span(x) for x in s.links]
        assert r.start_ns == s.start_ns and r.end_ns == s.end_ns
        assert r.resource["service.name"] == "keel-tests"
        assert r.scope == "keel" and r.schema_url == SCHEMA_URL
        for k, v in s.attributes.items():
            if k == WATERMARK:
                continue
            if k in CONTENT_ATTRIBUTES and not capture:
                assert k not in r.attributes, (s.name, k)
            elif isinstance(v, str | int | float | bool) or (
                isinstance(v, list) and all(isinstance(x, str) for x in v)
            ):
                assert r.attributes[k] == v, (s.name, k)
            else:
                assert k in r.attributes, (s.name, k)

    names = sorted(r.name for r in received)
    assert names == sorted(
        [
            "invoke_workflow exported",
            "execute exported",
            "execute exported (resumed)",
            "fetch#0",
            "execute_tool fetch",
            "llm:text#0",
            f"chat {model.name}",
            "signal:go#0",
            "flaky#0",
            "execute_tool flaky",
            "execute_tool flaky",
            "enrich#0",
            "execute_tool enrich",
        ]
    )
    [root] = [r for r in received if r.parent_id is None]
    assert root.name == "invoke_workflow exported"
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert root.attributes["gen_ai.workflow.name"] == "exported"
    execs = {r.attributes["keel.execution"]: r for r in received if r.name.startswith("execute ")}
    assert {e.parent_id for e in execs.values()} == {root.span_id}
    assert execs[2].links == [execs[1].span_id]

    [chat] = [r for r in received if r.name.startswith("chat ")]
    assert chat.kind == "CLIENT"
    assert chat.parent_id == next(r.span_id for r in received if r.name == "llm:text#0")
    assert chat.attributes["gen_ai.provider.name"] == "keel-scripted"
    assert chat.attributes["gen_ai.request.model"] == model.name
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    assert isinstance(chat.attributes["keel.cost.usd"], float)
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["stop"]

    fetch_step = next(r for r in received if r.name == "fetch#0")
    [tool] = [r for r in received if r.name == "execute_tool fetch"]
    assert tool.parent_id == fetch_step.span_id
    assert tool.attributes["gen_ai.tool.name"] == "fetch"
    assert tool.attributes["gen_ai.tool.call.id"] == f"{handle.id}:fetch#0"
    flaky_calls = sorted(
        (r for r in received if r.name == "execute_tool flaky"),
        key=lambda r: r.attributes["keel.attempt"],
    )
    assert [(c.status, c.attributes.get("error.type")) for c in flaky_calls] == [
        ("ERROR", "HTTPStatusError"),
        ("OK", None),
    ]
    assert "503" in flaky_calls[0].status_message
    enrich_step = next(r for r in received if r.name == "enrich#0")
    assert enrich_step.status == "OK" and enrich_step.attributes["keel.fallback"] == "degrade"
    [event] = enrich_step.events
    assert event["name"] == "keel.fallback"
    assert event["attributes"]["error.type"] == "HTTPStatusError"

    payload = receiver.payload()
    if capture:
        # the GenAI conventions' shapes, as JSON: role + parts; a finish_reason per output
        [asked] = json.loads(chat.attributes["gen_ai.input.messages"])
        assert asked == {"role": "user", "parts": [{"type": "text", "content": ASKED}]}
        assert json.loads(chat.attributes["gen_ai.output.messages"]) == [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": f"Answer: {REPLY}"}],
                "finish_reason": "stop",
            }
        ]
        assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"ref": TOOL_ARG}
        assert TOOL_RESULT in tool.attributes["gen_ai.tool.call.result"]
        assert TOOL_ARG in fetch_step.attributes["keel.step.input"]
        assert TOOL_RESULT in fetch_step.attributes["keel.step.output"]
        for sentinel in SENTINELS:
            assert sentinel.encode() in payload
    else:
        for r in received:
            assert not set(CONTENT_ATTRIBUTES) & set(r.attributes), r.name
        for sentinel in SENTINELS:  # anywhere on the wire, in any field
            assert sentinel.encode() not in payload
        # ... while the local store keeps the content for debugging
        local = {s.name: s for s in stored}
        assert PROMPT in local[f"chat {model.name}"].attributes["gen_ai.input.messages"]
        assert TOOL_RESULT in local["fetch#0"].attributes["keel.step.output"]


async def test_no_export_without_an_endpoint(
    otlp_http: Any, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without OTEL_EXPORTER_OTLP_ENDPOINT (or with OTEL_TRACES_EXPORTER=none) nothing is
    sent; the local store still has the trace. With tracing off nothing is sent either,
    endpoint or not."""
    for case in ("unset", "none", "tracing-off"):
        tracing = case != "tracing-off"
        if case == "unset":
            monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
        else:
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_http.endpoint)
            if case == "none":
                monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
            else:
                monkeypatch.delenv("OTEL_TRACES_EXPORTER")
        app = keel.App(store_url, settings=Settings(poll_interval=0.02, tracing=tracing))

        @app.tool
        async def echo(x: int) -> int:
            return x

        @app.workflow
        async def quiet(ctx: keel.Context) -> int:
            return await ctx.call(echo, 1)  # type: ignore[no-any-return]

        try:
            handle = await app.start(quiet, {})
            assert await handle.result(WAIT) == 1
            # root, execution, step, tool call; with tracing off: nothing stored
            assert len(await app.trace(handle.id)) == (4 if tracing else 0)
        finally:
            await app.close()
        if not tracing:
            assert await app.store.load_spans(ids.hex_trace(ids.trace_id(handle.id))) == []
    assert otlp_http.requests == []


def test_unsupported_protocol_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.observe.export import OTLPExport

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(keel.ConfigError, match="http/json"):
        OTLPExport.from_env()
