"""Structured output: schema in, validated instance out; retry with the validation errors
as feedback; forced-tool mode; confidence from logprobs or self-consistency.

Confidence, as documented in keel/llm/structured.py: exp(mean(token logprobs)) when the
provider returns logprobs; otherwise, with `samples=n`, the share of n answers equal to
the first.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import keel
from keel.engine.runtime import Settings
from keel.llm import Gateway, LLMResponse, ModelSpec, Reply, ScriptedModel
from keel.types import RunStatus
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)
NO_RETRY = keel.Retry(attempts=1)


class Label(BaseModel):
    """A ticket's category and priority."""

    category: Literal["billing", "outage", "general"]
    priority: int


GOOD = {"category": "billing", "priority": 2}


@pytest.fixture
async def llm_app(store_url: str) -> AsyncIterator[Callable[..., keel.App]]:
    apps: list[keel.App] = []

    def make(llm: Any) -> keel.App:
        app = keel.App(store_url, settings=Settings(poll_interval=0.02), llm=llm)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


def scripted_sequence(*replies: Any) -> ScriptedModel:
    """Answers with `replies` in order (the last one repeats)."""
    seen: list[int] = []

    def fn(messages: list[dict[str, Any]]) -> Any:
        seen.append(1)
        return replies[min(len(seen), len(replies)) - 1]

    return ScriptedModel(fn)


def last_user(call: dict[str, Any]) -> str:
    return str([m for m in call["messages"] if m["role"] == "user"][-1]["content"])


async def llm_records(app: keel.App, run_id: str) -> list[keel.StepRecord]:
    return [s for s in await app.steps(run_id) if s.kind.value == "llm"]


def classify_app(app: keel.App, **options: Any) -> Any:
    @app.workflow
    async def classify(ctx: keel.Context, text: str) -> dict[str, Any]:
        label = await ctx.llm.structured(Label, f"Classify: {text}", **options)
        assert isinstance(label, Label)
        return label.model_dump()

    return classify


# -- parse, retry with feedback, validate ------------------------------------------------------


async def test_structured_output_in_json_schema_mode(llm_app: Callable[..., keel.App]) -> None:
    model = ScriptedModel(lambda m: "```json\n" + json.dumps(GOOD) + "\n```")  # fenced is fine
    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))
    classify = classify_app(app)
    handle = await app.start(classify, {"text": "refund"})
    assert await handle.result(RESULT) == GOOD
    (call,) = model.calls
    fmt = call["params"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Label"
    assert fmt["json_schema"]["schema"] == Label.model_json_schema()
    assert "tools" not in call["params"]
    (rec,) = await llm_records(app, handle.id)
    assert rec.key == "llm:structured#0"


async def test_invalid_answers_are_retried_with_the_problems_as_feedback(
    llm_app: Callable[..., keel.App],
) -> None:
    model = scripted_sequence(
        "Sure! It's billing.",  # not JSON
        {"category": "refunds", "priority": "high"},  # wrong values
        GOOD,
    )
    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))
    classify = classify_app(app)
    handle = await app.start(classify, {"text": "refund"})
    assert await handle.result(RESULT) == GOOD
    first, second, third = model.calls
    assert last_user(first) == "Classify: refund"

    # the second request carries the first answer and why it was rejected
    assert second["messages"][:1] == first["messages"]
    assert second["messages"][-2] == {"role": "assistant", "content": "Sure! It's billing."}
    feedback = last_user(second)
    assert "rejected" in feedback and "not valid JSON" in feedback

    feedback = last_user(third)
    assert "category" in feedback and "priority" in feedback
    assert "'billing', 'outage' or 'general'" in feedback  # pydantic's own words
    assert len(third["messages"]) == len(second["messages"]) + 2

    recs = await llm_records(app, handle.id)
    assert [r.key for r in recs] == [f"llm:structured#{i}" for i in range(3)]
    assert all(r.status.value == "ok" for r in recs)  # each turn journaled as it came


async def test_validate_checks_feed_back_too(llm_app: Callable[..., keel.App]) -> None:
    model = scripted_sequence({"category": "outage", "priority": 9}, GOOD)

    def sane_priority(label: Label) -> str | None:
        return None if label.priority <= 5 else f"priority {label.priority} is above 5"

    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))
    classify = classify_app(app, validate=sane_priority)
    assert await (await app.start(classify, {"text": "x"})).result(RESULT) == GOOD
    assert "priority 9 is above 5" in last_user(model.calls[1])


async def test_still_invalid_after_the_retries_is_validation_failed(
    llm_app: Callable[..., keel.App],
) -> None:
    model = ScriptedModel(lambda m: {"category": "spam", "priority": 1})
    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))

    @app.workflow
    async def wf(ctx: keel.Context) -> dict[str, Any]:
        try:
            await ctx.llm.structured(Label, "Classify: x", retries=1)
        except keel.ValidationFailed as exc:
            return {"messages": exc.messages, "output": exc.output, "text": str(exc)}
        raise AssertionError("no ValidationFailed")

    out = await (await app.start(wf)).result(RESULT)
    assert len(model.calls) == 2  # one try and one retry
    assert out["output"] == json.dumps({"category": "spam", "priority": 1})
    assert len(out["messages"]) == 1 and out["messages"][0].startswith("category:")
    assert "after 2 attempt(s)" in out["text"]

    # uncaught, it fails the run with a structured error
    app2 = llm_app(Gateway({"m": model}, retry=NO_RETRY))
    classify = classify_app(app2, retries=0)
    info = await (await app2.start(classify, {"text": "x"})).settle(RESULT)
    assert info.status is RunStatus.FAILED and info.error is not None
    assert info.error.type == "ValidationFailed" and info.error.data["messages"]


async def test_forced_tool_mode_parses_the_tool_call(llm_app: Callable[..., keel.App]) -> None:
    def fn(messages: list[dict[str, Any]], params: dict[str, Any]) -> Reply:
        if len(messages) == 1:  # first try: arguments that do not validate
            return Reply(tool_calls=[{"name": "Label", "arguments": {"category": "billing"}}])
        return Reply(tool_calls=[{"name": "Label", "arguments": json.dumps(GOOD)}])

    model = ScriptedModel(fn)
    app = llm_app(Gateway({"m": ModelSpec(model, structured="tool")}, retry=NO_RETRY))
    classify = classify_app(app)
    handle = await app.start(classify, {"text": "refund"})
    assert await handle.result(RESULT) == GOOD
    first, second = model.calls
    params = first["params"]
    assert "response_format" not in params
    (tool,) = params["tools"]
    assert tool["function"]["name"] == "Label"
    assert tool["function"]["parameters"] == Label.model_json_schema()
    assert params["tool_choice"] == {"type": "function", "function": {"name": "Label"}}
    assert "priority" in last_user(second) and "Field required" in last_user(second)
    recs = await llm_records(app, handle.id)
    resp = LLMResponse.model_validate(recs[-1].output)
    assert resp.tool_calls[0].name == "Label" and json.loads(resp.tool_calls[0].arguments) == GOOD


async def test_structured_results_replay_without_calling_the_model(
    llm_app: Callable[..., keel.App],
) -> None:
    model = scripted_sequence("nope", GOOD)
    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))

    @app.workflow
    async def wf(ctx: keel.Context) -> dict[str, Any]:
        label = await ctx.llm.structured(Label, "Classify: x")
        await ctx.wait_for("go")
        return label.model_dump()

    handle = await app.start(wf)
    assert (await handle.settle(RESULT)).status is RunStatus.WAITING
    await handle.signal("go")
    assert await handle.result(RESULT) == GOOD
    assert len(model.calls) == 2


# -- confidence ------------------------------------------------------------------------------


async def test_confidence_from_logprobs_is_the_geometric_mean_probability(
    llm_app: Callable[..., keel.App],
) -> None:
    logprobs = [-0.01, -0.2, -0.05, -1.5]  # exp(mean) = 0.6637...
    score = math.exp(sum(logprobs) / len(logprobs))
    model = ScriptedModel(lambda m: Reply(content=json.dumps(GOOD), logprobs=logprobs))
    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))

    @app.workflow
    async def wf(ctx: keel.Context, threshold: float) -> dict[str, Any]:
        try:
            label = await ctx.llm.structured(
                Label, "Classify: x", min_confidence=threshold, on_low_confidence="raise"
            )
        except keel.LowConfidence as exc:
            return {
                "low": True,
                "output": exc.output,  # type: ignore[attr-defined]
                "score": exc.score,  # type: ignore[attr-defined]
                "threshold": exc.threshold,  # type: ignore[attr-defined]
            }
        return {"low": False, "label": label.model_dump()}

    low = await (await app.start(wf, {"threshold": 0.7})).result(RESULT)
    assert low == {"low": True, "output": GOOD, "score": pytest.approx(score), "threshold": 0.7}
    assert model.calls[0]["params"]["logprobs"] is True  # asked for, to score the answer

    ok = await (await app.start(wf, {"threshold": 0.6})).result(RESULT)
    assert ok == {"low": False, "label": GOOD}

    # the journal keeps the logprobs the score came from
    (rec,) = await llm_records(app, (await app.list_runs())[0].id)
    assert LLMResponse.model_validate(rec.output).logprobs == logprobs


async def test_low_confidence_fails_the_run_with_output_and_score(
    llm_app: Callable[..., keel.App],
) -> None:
    model = ScriptedModel(lambda m: json.dumps(GOOD), logprob=-0.5)  # per token when asked
    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))
    classify = classify_app(app, min_confidence=0.9, on_low_confidence="raise")
    info = await (await app.start(classify, {"text": "x"})).settle(RESULT)
    assert info.status is RunStatus.FAILED and info.error is not None
    assert info.error.type == "LowConfidence"
    data = info.error.data
    assert data["output"] == GOOD and data["threshold"] == 0.9 and data["schema"] == "Label"
    assert data["score"] == pytest.approx(math.exp(-0.5))


async def test_self_consistency_over_samples(llm_app: Callable[..., keel.App]) -> None:
    other = {"category": "outage", "priority": 1}
    model = scripted_sequence(GOOD, GOOD, other)  # the first answer, then two samples
    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))

    @app.workflow
    async def wf(ctx: keel.Context, threshold: float) -> dict[str, Any]:
        try:
            await ctx.llm.structured(
                Label, "Classify: x", samples=3, min_confidence=threshold, on_low_confidence="raise"
            )
        except keel.LowConfidence as exc:
            return {"score": exc.score, "output": exc.output}  # type: ignore[attr-defined]
        return {"score": None}

    handle = await app.start(wf, {"threshold": 0.9})
    out = await handle.result(RESULT)
    assert out == {"score": pytest.approx(2 / 3), "output": GOOD}  # two of three agree
    assert len(model.calls) == 3
    assert all("logprobs" not in c["params"] for c in model.calls)
    first, *samples = model.calls
    assert all(s["params"]["temperature"] == 1.0 for s in samples)
    assert all(s["messages"] == first["messages"] for s in samples)
    keys = [r.key for r in await llm_records(app, handle.id)]
    assert keys == ["llm:structured#0", "llm:structured.sample#0", "llm:structured.sample#1"]
    sampled = [LLMResponse.model_validate(r.output) for r in await llm_records(app, handle.id)]
    assert not any(r.cache_hit for r in sampled)  # samples never come from the cache

    # 2/3 passes a lower bar (the model keeps answering `other` now: 1/3 would fail)
    model2 = scripted_sequence(GOOD, other, GOOD)
    app2 = llm_app(Gateway({"m": model2}, retry=NO_RETRY))

    @app2.workflow
    async def wf2(ctx: keel.Context) -> str:
        label = await ctx.llm.structured(Label, "Classify: y", samples=3, min_confidence=0.6)
        return label.category

    assert await (await app2.start(wf2)).result(RESULT) == "billing"


async def test_structured_takes_a_fallback(llm_app: Callable[..., keel.App]) -> None:
    model = ScriptedModel(lambda m: (_ for _ in ()).throw(ConnectionError("offline")))
    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))

    @app.workflow
    async def wf(ctx: keel.Context) -> Any:
        return await ctx.llm.structured(Label, "Classify: x", fallback=keel.Fallback.degrade(None))

    handle = await app.start(wf)
    assert await handle.result(RESULT) is None
    (rec,) = await llm_records(app, handle.id)
    assert rec.fallback == "degrade" and rec.error is not None
