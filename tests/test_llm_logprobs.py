"""Confidence needs logprobs only where the provider returns them; otherwise it samples."""

from __future__ import annotations

from typing import Any

import pytest

from keel.llm import Gateway, ScriptedModel
from keel.llm.gateway import CallContext
from tests.backends import fresh_url
from tests.limits import WAIT


def test_logprob_support_follows_litellms_parameter_map() -> None:
    gw = Gateway(
        models={
            "claude": "anthropic/claude-3-5-sonnet-20241022",
            "gpt": "openai/gpt-4o-mini",
            "offline": ScriptedModel(lambda m: "x"),
        }
    )
    assert gw.supports_logprobs("gpt", CallContext()) is True
    assert gw.supports_logprobs("claude", CallContext()) is False  # -> self-consistency
    assert gw.supports_logprobs("offline", CallContext()) is True


async def test_without_logprobs_confidence_is_self_consistency(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from pydantic import BaseModel

    import keel

    class Label(BaseModel):
        category: str

    model = ScriptedModel(lambda m: json.dumps({"category": "billing"}))
    gw = Gateway(models={"m": model}, retry=keel.Retry(attempts=1))
    monkeypatch.setattr(gw, "supports_logprobs", lambda model, cc: False)
    app = keel.App(fresh_url(tmp_path), llm=gw)

    @app.workflow()
    async def wf(ctx: keel.Context) -> str:
        label = await ctx.llm.structured(
            Label, "Classify", min_confidence=0.9, on_low_confidence="raise"
        )
        return label.category

    try:
        assert await (await app.start(wf)).result(WAIT) == "billing"
    finally:
        await app.close()
    assert len(model.calls) == 3  # the answer plus two samples, all agreeing
    assert all("logprobs" not in c["params"] for c in model.calls)
