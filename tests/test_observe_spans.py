"""The span tree of a run, per the OpenTelemetry GenAI conventions (keel/observe).

One root per run (`invoke_workflow {name}`), an execution span under it, one span per
step, and per attempt a tool call (`execute_tool {tool}`) or a model call
(`chat {model}`, CLIENT) under the step; map items under their map step.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import keel
from keel.engine.runtime import Settings
from keel.llm import Gateway, Reply, ScriptedModel
from keel.observe import SEMCONV_VERSION, ids
from keel.observe.redact import MASK
from keel.observe.spans import SpanRow
from keel.types import StepKind
from tests.faults import Always, Faults, Schedule
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)
LLM_RESULT = WAIT  # a bound, never a timing (tests/limits.py)
FAST = keel.Retry(attempts=4, backoff=0.001, jitter=False)


# -- helpers ------------------------------------------------------------------------------


def step(spans: list[SpanRow], key: str) -> SpanRow:
    found = [s for s in spans if s.attributes.get("keel.step.key") == key]
    assert len(found) == 1, f"{len(found)} spans for step {key!r}"
    return found[0]


def kids(spans: list[SpanRow], parent: SpanRow) -> list[SpanRow]:
    return sorted(
        (s for s in spans if s.parent_id == parent.span_id),
        key=lambda s: (s.start_ns, s.attributes.get("keel.attempt", 0)),
    )


def root_of(spans: list[SpanRow]) -> SpanRow:
    roots = [s for s in spans if s.parent_id is None]
    assert len(roots) == 1, [s.name for s in roots]
    return roots[0]


def executions(spans: list[SpanRow]) -> list[SpanRow]:
    return sorted(
        (s for s in spans if "keel.execution" in s.attributes),
        key=lambda s: s.attributes["keel.execution"],
    )


def assert_well_formed(spans: list[SpanRow], run_id: str) -> None:
    """One trace, unique span ids, every parent present, every span ended."""
    assert {s.trace_id for s in spans} == {ids.trace_id(run_id)}
    assert {s.run_id for s in spans} == {run_id}
    span_ids = [s.span_id for s in spans]
    assert len(span_ids) == len(set(span_ids))
    for s in spans:
        assert s.parent_id is None or s.parent_id in set(span_ids), s.name
        assert s.end_ns is not None and s.end_ns >= s.start_ns > 0, s.name
        assert s.status in ("OK", "ERROR")


@pytest.fixture
async def llm_app(store_url: str) -> AsyncIterator[Callable[..., keel.App]]:
    apps: list[keel.App] = []

    def make(model: ScriptedModel | Gateway) -> keel.App:
        gateway = model if isinstance(model, Gateway) else None
        app = keel.App(
            store_url,
            settings=Settings(poll_interval=0.02),
            llm=gateway or Gateway({"m": model}, retry=keel.Retry(attempts=1)),
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


# -- a sequential run -----------------------------------------------------------------------


async def test_sequential_run_has_root_execution_steps_and_tool_calls(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def fetch(ticket: str) -> dict[str, Any]:
        return {"ticket": ticket, "body": "printer on fire"}

    @app.tool
    async def score(text: str, weight: int = 1) -> int:
        return len(text) * weight

    @app.workflow
    async def triage(ctx: keel.Context, ticket: str) -> int:
        doc = await ctx.call(fetch, ticket)
        return await ctx.call(score, doc["body"], weight=2)  # type: ignore[no-any-return]

    handle = await app.start(triage, {"ticket": "T-1"})
    assert await handle.result(RESULT) == 30
    spans = await app.trace(handle.id)
    assert_well_formed(spans, handle.id)
    assert len(spans) == 6  # root, execution, 2 steps, 2 tool calls

    root = root_of(spans)
    assert root.name == "invoke_workflow triage"
    assert root.kind == "INTERNAL" and root.status == "OK"
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert root.attributes["gen_ai.workflow.name"] == "triage"
    assert root.attributes["keel.run.id"] == handle.id
    assert root.attributes["keel.run.status"] == "SUCCEEDED"
    assert root.attributes["keel.run.input"] == '{"ticket": "T-1"}'
    assert SEMCONV_VERSION.count(".") == 2  # the pinned conventions version

    [execution] = kids(spans, root)
    assert execution.name == "execute triage"
    assert execution.attributes["keel.execution"] == 1
    assert execution.attributes["keel.run.resumed"] is False
    assert execution.links == []

    steps = kids(spans, execution)
    assert [s.attributes["keel.step.key"] for s in steps] == ["fetch#0", "score#0"]
    assert [s.name for s in steps] == ["fetch#0", "score#0"]
    f, sc = steps
    assert f.attributes["keel.step.kind"] == "tool" and f.attributes["keel.step.name"] == "fetch"
    assert f.attributes["keel.step.attempts"] == 1
    assert f.attributes["keel.step.input"] == '{"ticket": "T-1"}'  # by parameter name
    assert f.attributes["keel.step.output"] == '{"ticket": "T-1", "body": "printer on fire"}'
    assert f.attributes["keel.next_step"] == "score#0"
    assert sc.attributes["keel.step.input"] == '{"text": "printer on fire", "weight": 2}'
    assert sc.attributes["keel.step.output"] == "30"
    assert all(s.status == "OK" for s in steps)

    call_ids = set()
    for s, tool in zip(steps, ["fetch", "score"], strict=True):
        [call] = kids(spans, s)
        assert call.name == f"execute_tool {tool}"
        assert call.kind == "INTERNAL" and call.status == "OK"
        assert call.attributes["gen_ai.operation.name"] == "execute_tool"
        assert call.attributes["gen_ai.tool.name"] == tool
        assert call.attributes["gen_ai.tool.type"] == "function"
        assert call.attributes["keel.attempt"] == 1
        call_ids.add(call.attributes["gen_ai.tool.call.id"])
        assert kids(spans, call) == []
        assert s.start_ns <= call.start_ns and call.end_ns <= s.end_ns  # type: ignore[operator]
    assert len(call_ids) == 2 and all(handle.id in c for c in call_ids)
    [tool_call] = kids(spans, sc)
    assert tool_call.attributes["gen_ai.tool.call.result"] == "30"
    assert json.loads(tool_call.attributes["gen_ai.tool.call.arguments"]) == {
        "text": "printer on fire",
        "weight": 2,
    }

    # the step spans carry the ids the journal is replayed by: stable across processes
    assert f.span_id == ids.step_span_id(handle.id, "fetch#0")
    assert root.span_id == ids.step_span_id(handle.id, "<run>")


# -- a map ----------------------------------------------------------------------------------


async def test_map_items_are_children_of_the_map_step(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.tool
    async def square(x: int) -> int:
        return x * x

    @app.tool
    async def label(x: int) -> str:
        return f"item-{x}"

    async def per_item(ctx: keel.Context, x: int) -> str:
        return await ctx.call(label, x)  # type: ignore[no-any-return]

    @app.workflow
    async def fan(ctx: keel.Context, n: int) -> list[Any]:
        squares = await ctx.map(square, list(range(n)), concurrency=2)
        labels = await ctx.map(per_item, [10, 20])
        return [list(squares.ok), list(labels.ok)]

    handle = await app.start(fan, {"n": 4})
    assert await handle.result(RESULT) == [[0, 1, 4, 9], ["item-10", "item-20"]]
    spans = await app.trace(handle.id)
    assert_well_formed(spans, handle.id)
    [execution] = executions(spans)

    squares = step(spans, "map:square#0")
    labels = step(spans, "map:per_item#0")
    assert squares.parent_id == execution.span_id and labels.parent_id == execution.span_id
    assert squares.attributes["keel.step.kind"] == "map"
    assert squares.attributes["keel.next_step"] == "map:per_item#0"

    items = kids(spans, squares)
    assert sorted(s.attributes["keel.step.key"] for s in items) == [
        f"map:square#0/{i}" for i in range(4)
    ]
    for item in items:
        assert item.attributes["keel.step.kind"] == "tool"
        [call] = kids(spans, item)
        assert call.name == "execute_tool square"
        assert call.attributes["gen_ai.tool.call.id"].endswith(item.attributes["keel.step.key"])

    # a map over a function: each item is a child workflow span, its steps under it
    children = kids(spans, labels)
    assert sorted(s.attributes["keel.step.key"] for s in children) == [
        "map:per_item#0/0",
        "map:per_item#0/1",
    ]
    for child in children:
        assert child.attributes["keel.step.kind"] == StepKind.CHILD.value
        [inner] = kids(spans, child)
        assert inner.attributes["keel.step.key"] == f"{child.attributes['keel.step.key']}/label#0"
        [call] = kids(spans, inner)
        assert call.name == "execute_tool label"


# -- retries and fallbacks ------------------------------------------------------------------


async def test_retry_has_one_call_span_per_attempt(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    faults = Faults()
    flaky = faults.tool(app, "flaky", Schedule("503", "conn", "ok"), retry=FAST)

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return await ctx.call(flaky, "x")  # type: ignore[no-any-return]

    handle = await app.start(wf, {})
    assert await handle.result(RESULT) == "x"
    spans = await app.trace(handle.id)
    assert_well_formed(spans, handle.id)

    s = step(spans, "flaky#0")
    assert s.status == "OK"
    assert s.attributes["keel.step.attempts"] == 3
    calls = kids(spans, s)
    assert [c.name for c in calls] == ["execute_tool flaky"] * 3
    assert [c.attributes["keel.attempt"] for c in calls] == [1, 2, 3]
    assert [c.status for c in calls] == ["ERROR", "ERROR", "OK"]
    first, second, last = calls
    assert first.attributes["error.type"] == "HTTPStatusError"
    assert "503" in (first.status_message or "")
    assert second.attributes["error.type"] == "ConnectionError"
    assert "cannot reach" in (second.status_message or "")
    assert "error.type" not in last.attributes and last.status_message is None
    assert last.attributes["gen_ai.tool.call.result"] == "x"
    assert len({c.span_id for c in calls}) == 3
    # each attempt begins after the previous one failed
    assert first.end_ns <= second.start_ns and second.end_ns <= last.start_ns  # type: ignore[operator]


async def test_degrade_fallback_is_an_ok_step_with_the_error_as_an_event(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults()
    enrich = faults.tool(
        app,
        "enrich",
        Always("503"),
        retry=keel.Retry(attempts=2, backoff=0.001),
        fallback=keel.Fallback.degrade(default={"employees": None}),
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> Any:
        return await ctx.call(enrich, "acme")

    handle = await app.start(wf, {})
    assert await handle.result(RESULT) == {"employees": None}
    spans = await app.trace(handle.id)
    assert_well_formed(spans, handle.id)
    assert root_of(spans).status == "OK"

    s = step(spans, "enrich#0")
    assert s.status == "OK" and s.status_message is None
    assert s.attributes["keel.fallback"] == "degrade"
    assert s.attributes["keel.step.attempts"] == 2
    assert s.attributes["error.type"] == "HTTPStatusError"
    assert s.attributes["keel.step.output"] == '{"employees": null}'
    [event] = s.events
    assert event["name"] == "keel.fallback"
    assert event["attributes"]["keel.fallback"] == "degrade"
    assert event["attributes"]["error.type"] == "HTTPStatusError"
    assert "503" in event["attributes"]["error.message"]
    # both attempts failed: the fallback's default is not what the tool returned
    calls = kids(spans, s)
    assert [c.status for c in calls] == ["ERROR", "ERROR"]
    assert all(c.attributes["error.type"] == "HTTPStatusError" for c in calls)
    assert all("gen_ai.tool.call.result" not in c.attributes for c in calls)


# -- a failed run ---------------------------------------------------------------------------


async def test_failed_run_marks_root_execution_step_and_call(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def reserve(sku: str) -> str:
        return f"hold-{sku}"

    @app.tool
    async def charge(amount: int) -> str:
        raise ValueError(f"card declined for {amount} EUR")

    @app.tool
    async def ship(sku: str) -> str:
        return "shipped"

    @app.workflow
    async def checkout(ctx: keel.Context, sku: str) -> str:
        await ctx.call(reserve, sku)
        await ctx.call(charge, 42)
        return await ctx.call(ship, sku)  # type: ignore[no-any-return]

    handle = await app.start(checkout, {"sku": "A1"})
    with pytest.raises(keel.RunFailed):
        await handle.result(RESULT)
    spans = await app.trace(handle.id)
    assert_well_formed(spans, handle.id)

    root = root_of(spans)
    assert root.status == "ERROR"
    assert root.attributes["error.type"] == "ValueError"
    assert root.attributes["keel.error.step"] == "charge#0"
    assert root.attributes["keel.run.status"] == "FAILED"
    assert "card declined for 42 EUR" in (root.status_message or "")
    [execution] = executions(spans)
    assert execution.status == "ERROR" and "card declined" in (execution.status_message or "")

    assert [s.attributes["keel.step.key"] for s in kids(spans, execution)] == [
        "reserve#0",
        "charge#0",
    ]
    failed = step(spans, "charge#0")
    assert failed.status == "ERROR"
    assert failed.attributes["error.type"] == "ValueError"
    assert failed.status_message == "ValueError: card declined for 42 EUR"
    assert "keel.step.output" not in failed.attributes
    [call] = kids(spans, failed)
    assert call.status == "ERROR" and call.attributes["error.type"] == "ValueError"
    assert step(spans, "reserve#0").status == "OK"


# -- model calls ----------------------------------------------------------------------------


async def test_model_call_is_a_client_span_with_usage_cost_and_content(
    llm_app: Callable[..., keel.App],
) -> None:
    model = ScriptedModel(lambda m: "Category: billing", price_as="gpt-4o-mini")
    app = llm_app(model)

    @app.tool
    async def lookup(order: int) -> dict[str, Any]:
        return {"order": order, "status": "refunded"}

    @app.workflow
    async def classify(ctx: keel.Context, text: str) -> str:
        await ctx.call(lookup, 7)
        return await ctx.llm.text(  # type: ignore[no-any-return]
            f"Classify: {text}", system="You route tickets.", temperature=0.3, max_tokens=50
        )

    @app.workflow(trace_content=False)
    async def private(ctx: keel.Context, text: str) -> str:
        await ctx.call(lookup, 8)
        return await ctx.llm.text(f"Classify: {text}")  # type: ignore[no-any-return]

    handle = await app.start(classify, {"text": "I was charged twice"})
    assert await handle.result(LLM_RESULT) == "Category: billing"
    spans = await app.trace(handle.id)
    assert_well_formed(spans, handle.id)

    s = step(spans, "llm:text#0")
    assert s.attributes["keel.step.kind"] == "llm"
    [chat] = kids(spans, s)
    a = chat.attributes
    assert chat.kind == "CLIENT" and chat.status == "OK"
    assert chat.name == f"chat {model.name}"
    assert chat.name == f"{a['gen_ai.operation.name']} {a['gen_ai.request.model']}"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "keel-scripted"
    assert a["gen_ai.request.model"] == model.name
    assert a["gen_ai.response.model"] == model.name
    assert a["gen_ai.request.temperature"] == 0.3
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert isinstance(a["gen_ai.usage.input_tokens"], int) and a["gen_ai.usage.input_tokens"] > 0
    assert isinstance(a["gen_ai.usage.output_tokens"], int)
    assert a["gen_ai.usage.output_tokens"] > 0
    assert isinstance(a["keel.cost.usd"], float) and a["keel.cost.usd"] > 0
    # the span says what the journal metered
    [rec] = [r for r in await app.steps(handle.id) if r.kind is StepKind.LLM]
    assert a["keel.cost.usd"] == pytest.approx(rec.output["cost_usd"])
    assert a["gen_ai.usage.input_tokens"] == rec.output["usage"]["input_tokens"]
    # content is kept locally by default (debugging needs it)
    assert "I was charged twice" in a["gen_ai.input.messages"]
    assert "You route tickets." in a["gen_ai.input.messages"]
    assert "Category: billing" in a["gen_ai.output.messages"]
    [tool_call] = kids(spans, step(spans, "lookup#0"))
    assert "refunded" in tool_call.attributes["gen_ai.tool.call.result"]

    # trace_content=False: the same spans and usage, no prompts, responses or tool results
    handle = await app.start(private, {"text": "my secret complaint"})
    assert await handle.result(LLM_RESULT) == "Category: billing"
    spans = await app.trace(handle.id)
    assert_well_formed(spans, handle.id)
    [chat] = kids(spans, step(spans, "llm:text#0"))
    assert chat.name == f"chat {model.name}"
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert chat.attributes["keel.cost.usd"] > 0
    for span in spans:
        for attr in (
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "gen_ai.tool.call.result",
            "keel.step.input",
            "keel.step.output",
        ):
            assert attr not in span.attributes, (span.name, attr)
    assert "my secret complaint" not in repr(chat.attributes)
    stored = repr([(s.attributes, s.events) for s in spans])
    assert "refunded" not in stored
    assert "Category: billing" not in stored


COLD = 1.0  # seconds of one-time setup before the first model call is sent


class ColdGateway(Gateway):
    """A gateway whose one-time setup takes COLD seconds, as LiteLLM's first import does
    on a busy machine: it runs inside the first model step, before any call is sent."""

    def _setup(self) -> None:
        if not self._ready:
            time.sleep(COLD)
        super()._setup()


class StatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"provider said {status}")
        self.status_code = status


async def test_model_call_span_is_the_call_not_the_setup_before_it(
    llm_app: Callable[..., keel.App],
) -> None:
    """The step span covers the whole step; each `chat` span only the call it stands for,
    exactly the time the journal recorded for it (start and latency)."""
    asked = {"n": 0}

    def flaky(messages: list[dict[str, Any]]) -> str:
        asked["n"] += 1
        if asked["n"] == 1:
            raise StatusError(503)  # a transient failure: the step tries again
        return "ok"

    model = ScriptedModel(flaky, latency=0.05)
    retry = keel.Retry(attempts=2, backoff=0.01, jitter=False)
    app = llm_app(ColdGateway({"m": model}, default="m", retry=retry, cache=False))

    @app.workflow
    async def ask(ctx: keel.Context) -> str:
        return await ctx.llm.text("hi")  # type: ignore[no-any-return]

    handle = await app.start(ask, {})
    assert await handle.result(LLM_RESULT) == "ok"
    spans = await app.trace(handle.id)
    assert_well_formed(spans, handle.id)
    s = step(spans, "llm:text#0")
    failed, chat = kids(spans, s)
    [rec] = [r for r in await app.steps(handle.id) if r.kind is StepKind.LLM]
    sent, latency_ms = rec.output["started_at"], rec.output["latency_ms"]
    assert s.end_ns is not None and failed.end_ns is not None and chat.end_ns is not None

    # the answering call's span is the call as recorded: its start and its latency
    assert chat.status == "OK" and chat.attributes["keel.attempt"] == 2
    assert chat.start_ns == pytest.approx(sent * 1e9, abs=1_000)
    assert (chat.end_ns - chat.start_ns) / 1e6 == pytest.approx(latency_ms, abs=0.01)
    assert latency_ms >= 50  # the model's own time is in it
    # the failed first attempt paid for the setup before its call was sent: its span
    # starts when the call did
    assert failed.status == "ERROR" and failed.attributes["keel.attempt"] == 1
    assert failed.start_ns - s.start_ns >= COLD * 1e9
    assert failed.end_ns <= chat.start_ns
    # the step span still covers the whole step: setup, failed call, backoff, call
    assert s.start_ns <= failed.start_ns and chat.end_ns <= s.end_ns
    assert s.end_ns - s.start_ns >= COLD * 1e9

    # a call that fails for good: the last attempt's span is its call too
    down = ScriptedModel(lambda m: (_ for _ in ()).throw(StatusError(503)))
    app = llm_app(ColdGateway({"m": down}, default="m", retry=keel.Retry(attempts=1)))

    @app.workflow
    async def give_up(ctx: keel.Context) -> str:
        return await ctx.llm.text("hi")  # type: ignore[no-any-return]

    handle = await app.start(give_up, {})
    with pytest.raises(keel.RunFailed, match="ModelUnavailable"):
        await handle.result(LLM_RESULT)
    spans = await app.trace(handle.id)
    s = step(spans, "llm:text#0")
    [last] = kids(spans, s)
    assert last.status == "ERROR" and s.status == "ERROR"
    assert last.start_ns - s.start_ns >= COLD * 1e9
    assert s.start_ns <= last.start_ns and last.end_ns <= s.end_ns  # type: ignore[operator]


async def test_messages_and_tool_calls_have_the_genai_shapes_redacted(
    llm_app: Callable[..., keel.App],
) -> None:
    """gen_ai.input.messages / gen_ai.output.messages are role + parts (text, tool_call,
    tool_call_response), output messages with a finish_reason; tool arguments are the
    object of named arguments however the tool was called; secrets are masked inside."""
    key = "sk-proj-" + "k" * 40

    def fn(messages: list[dict[str, Any]]) -> Reply:
        if not any(m["role"] == "tool" for m in messages):
            args = {"user": "bob", "password": "pw"}
            return Reply(tool_calls=[{"name": "login", "arguments": args}])
        return Reply(content=f"Signed in. Your key is {key}")

    model = ScriptedModel(fn)
    app = llm_app(model)

    @app.tool
    async def login(user: str, password: str) -> dict[str, Any]:
        """Sign a user in."""
        return {"session": f"s-{user}", "token": "t-123"}

    @app.workflow
    async def signin(ctx: keel.Context) -> str | None:
        await ctx.call(login, "ann", "pw-positional")
        await ctx.call(login, user="ann", password="pw-keyword")
        res = await ctx.llm.agent("Sign in bob", tools=[login], system="You sign people in.")
        return res.content

    handle = await app.start(signin, {})
    assert await handle.result(LLM_RESULT) == f"Signed in. Your key is {key}"
    spans = await app.trace(handle.id)
    assert_well_formed(spans, handle.id)
    assert key not in repr([s.attributes for s in spans])

    # a positional and a keyword call: the same object of named arguments, redacted
    by_position, by_keyword = (
        json.loads(kids(spans, step(spans, k))[0].attributes["gen_ai.tool.call.arguments"])
        for k in ("login#0", "login#1")
    )
    assert by_position == by_keyword == {"user": "ann", "password": MASK}

    first, second = (kids(spans, step(spans, k))[0] for k in ("llm:agent#0", "llm:agent#1"))
    [rec] = [r for r in await app.steps(handle.id) if r.key == "llm:agent#0"]
    call_id = rec.output["tool_calls"][0]["id"]
    system = {"role": "system", "parts": [{"type": "text", "content": "You sign people in."}]}
    user = {"role": "user", "parts": [{"type": "text", "content": "Sign in bob"}]}
    tool_call = {
        "type": "tool_call",
        "id": call_id,
        "name": "login",
        "arguments": {"user": "bob", "password": MASK},
    }
    assert json.loads(first.attributes["gen_ai.input.messages"]) == [system, user]
    assert json.loads(first.attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [tool_call], "finish_reason": "tool_call"}
    ]
    assert first.attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]  # as sent
    assert json.loads(second.attributes["gen_ai.input.messages"]) == [
        system,
        user,
        {"role": "assistant", "parts": [tool_call]},
        {
            "role": "tool",
            "parts": [
                {
                    "type": "tool_call_response",
                    "id": call_id,
                    "response": {"session": "s-bob", "token": MASK},
                }
            ],
        },
    ]
    assert json.loads(second.attributes["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": f"Signed in. Your key is {MASK}"}],
            "finish_reason": "stop",
        }
    ]


def test_message_parts_for_media_and_legacy_function_results() -> None:
    from keel.observe import genai

    got = genai.input_messages(
        [
            {
                "role": "user",
                "name": "ann",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "look", "arguments": "{not json"},
            },
            {"role": "function", "name": "look", "content": "42"},
        ]
    )
    assert got == [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "What is in these?"},
                {"type": "uri", "modality": "image", "uri": "https://x.test/cat.png"},
                {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "iVBOR"},
            ],
            "name": "ann",
        },
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": None, "name": "look", "arguments": "{not json"}],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": None, "response": 42}]},
    ]
    # no empty text beside a tool call
    assert genai.input_messages(
        [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            }
        ]
    ) == [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {}}],
        }
    ]
    # a response without a finish reason still has one (the conventions require it)
    assert genai.output_messages({"content": "hi"}) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hi"}], "finish_reason": "stop"}
    ]
