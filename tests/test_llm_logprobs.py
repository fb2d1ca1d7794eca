"""Confidence needs logprobs only where the provider returns them; otherwise it samples."""

from __future__ import annotations

from keel.llm import Gateway, ScriptedModel
from keel.llm.gateway import CallContext


def test_logprob_support_follows_litellms_parameter_map() -> None:
    gw = Gateway(models={"claude": "anthropic/claude-3-5-sonnet-20241022",
                         "gpt": "openai/gpt-4o-mini",
                         "offline": ScriptedModel(lambda m: "x")})
    assert gw.supports_logprobs("gpt", CallContext()) is True
    assert gw.supports_logprobs("claude", CallContext()) is False  # -> self-consistency
    assert gw.supports_logprobs("offline", CallContext()) is True
