"""Confidence routing: a structured output scoring below `min_confidence` goes to a
person with its score; their confirmation or correction becomes the step's result.

The model is a ScriptedModel whose logprobs give a known score:
exp(mean(logprobs)) (see keel/llm/structured.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import keel
from keel.engine.runtime import Settings
from keel.llm import Gateway, Reply, ScriptedModel
from tests.limits import WAIT

SETTLE = WAIT  # a bound, never a timing (tests/limits.py)
NO_RETRY = keel.Retry(attempts=1)
LOW_LOGPROBS = [-0.4, -1.2, -0.9, -0.5]  # confidence exp(-0.75) = 0.472
LOW_SCORE = math.exp(sum(LOW_LOGPROBS) / len(LOW_LOGPROBS))


class Label(BaseModel):
    """A ticket's category and priority."""

    category: Literal["billing", "outage", "general"]
    priority: int


GUESS = {"category": "general", "priority": 3}


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[keel.App]:
    model = ScriptedModel(
        rules=[
            ("sure:", Reply(content=json.dumps(GUESS), logprobs=[-0.01, -0.02])),
        ],
        default=Reply(content=json.dumps(GUESS), logprobs=LOW_LOGPROBS),
    )
    app = keel.App(
        store_url,
        settings=Settings(poll_interval=0.02),
        llm=Gateway({"m": model}, retry=NO_RETRY),
    )
    app.model = model  # type: ignore[attr-defined]

    @app.workflow()
    async def classify(ctx: keel.Context, text: str) -> dict[str, Any]:
        label = await ctx.llm.structured(
            Label, f"Classify: {text}", min_confidence=0.8, review_queue="triage-review"
        )
        assert isinstance(label, Label)
        return {"label": label.model_dump(), "after": await ctx.call(route, label.category)}

    @app.tool()
    async def route(category: str) -> str:
        return f"routed to {category}"

    yield app
    await app.close()


async def _low(app: keel.App, text: str, run_id: str) -> tuple[keel.RunHandle, Any]:
    handle = await app.start("classify", {"text": text}, id=run_id)
    info = await handle.settle(SETTLE)
    assert info.status is keel.RunStatus.WAITING
    [req] = [r for r in await app.approvals.list(kind="low_confidence") if r.run_id == run_id]
    return handle, req


async def test_confident_output_needs_no_review(app: keel.App) -> None:
    out = await (await app.start("classify", {"text": "sure: my card was charged"})).result(SETTLE)
    assert out == {"label": GUESS, "after": "routed to general"}
    assert await app.approvals.list() == []


async def test_low_confidence_waits_with_output_and_score(app: keel.App) -> None:
    handle, req = await _low(app, "the thing broke?", "lc1")
    assert req.kind == "low_confidence" and req.queue == "triage-review"
    assert req.status == "pending" and req.step == "low_confidence:Label#0"
    assert req.request["output"] == GUESS
    assert req.request["score"] == pytest.approx(LOW_SCORE)
    assert req.request["threshold"] == 0.8
    assert req.reason is not None and "below the required 0.8" in req.reason
    assert req.request["schema"]["title"] == "Label"
    assert "the thing broke?" in json.dumps(req.request["prompt"])
    assert [r.id for r in await app.approvals.list(queue="triage-review")] == [req.id]
    assert await app.approvals.list(kind="approval") == []
    # Nothing after the model call ran while it waited.
    assert [s.key for s in await app.steps(handle.id) if s.key == "route#0"] == []


async def test_correction_becomes_the_step_result(app: keel.App) -> None:
    handle, req = await _low(app, "I was charged twice", "lc2")
    for bad, message in (
        ({"category": "refunds", "priority": 1}, "category: must be one of"),
        ({"category": "billing"}, "priority: required"),
        ({"category": "billing", "priority": "high"}, "priority: expected integer"),
    ):
        with pytest.raises(keel.InputError, match=message):
            await app.approvals.correct(req.id, bad, by="rita")
    assert (await app.approvals.get(req.id)).status == "pending"  # refused: nothing decided

    right = {"category": "billing", "priority": 1}
    decided = await app.approvals.correct(req.id, right, by="rita", note="double charge")
    assert decided.status == "corrected"
    out = await handle.result(SETTLE)
    assert out == {"label": right, "after": "routed to billing"}  # the correction flowed on
    assert len(app.model.calls) == 1  # type: ignore[attr-defined]
    steps = {s.key: s for s in await app.steps(handle.id)}
    assert steps["low_confidence:Label#0"].output["output"] == right
    assert steps["low_confidence:Label#0"].output["by"] == "rita"
    assert [e["action"] for e in await app.approvals.audit(req.id)] == ["requested", "corrected"]
    with pytest.raises(keel.ConfigError, match="a decision is final"):
        await app.approvals.correct(req.id, right, by="rita")


async def test_confirmation_keeps_the_original(app: keel.App) -> None:
    handle, req = await _low(app, "hello there", "lc3")
    decided = await app.approvals.approve(req.id, by="rita")
    assert decided.status == "confirmed"
    assert await handle.result(SETTLE) == {"label": GUESS, "after": "routed to general"}


async def test_rejected_output_raises_review_rejected(app: keel.App) -> None:
    handle, req = await _low(app, "asdf", "lc4")
    with pytest.raises(keel.InputError, match="not a tool approval"):
        await app.approvals.edit(req.id, {"category": "billing"})
    await app.approvals.reject(req.id, "not a ticket", by="rita")
    with pytest.raises(keel.RunFailed) as failed:
        await handle.result(SETTLE)
    err = failed.value.error
    assert err is not None and err.type == "ReviewRejected"
    assert "not a ticket" in err.message


async def test_only_low_confidence_reviews_can_be_corrected(app: keel.App) -> None:
    @app.workflow()
    async def ask(ctx: keel.Context) -> str:
        await ctx.approval("go")
        return "went"

    handle = await app.start(ask)
    await handle.settle(SETTLE)
    [req] = await app.approvals.list(kind="approval")
    with pytest.raises(keel.InputError, match="only low-confidence outputs can be corrected"):
        await app.approvals.correct(req.id, {"category": "billing", "priority": 1})
    with pytest.raises(keel.ConfigError, match="unknown kind 'sample'"):
        await app.approvals.list(kind="sample")


async def test_an_unreviewed_low_confidence_output_times_out_as_a_review_rejection(
    store_url: str,
) -> None:
    model = ScriptedModel(lambda m: Reply(content=json.dumps(GUESS), logprobs=LOW_LOGPROBS))
    app = keel.App(
        store_url, settings=Settings(poll_interval=0.02), llm=Gateway({"m": model}, retry=NO_RETRY)
    )

    @app.workflow()
    async def hurried(ctx: keel.Context) -> str:
        try:
            await ctx.llm.structured(Label, "Classify: x", min_confidence=0.8, review_timeout=0.2)
        except keel.ReviewRejected as exc:
            return f"rejected: {exc}"
        return "reviewed"

    try:
        out = await (await app.start(hurried)).result(SETTLE)
        assert out.startswith("rejected: low_confidence") and "deadline" in out
        [req] = await app.approvals.list(kind="low_confidence", status="all")
        assert req.status == "expired"
    finally:
        await app.close()
