"""Records of model calls: requests, responses, tool calls and usage (JSON at every boundary)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

Message = dict[str, Any]  # OpenAI chat format: {"role": ..., "content": ..., ...}


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: str  # the raw JSON text the model produced (it may be invalid)


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0


class LLMResponse(BaseModel):
    """One model turn, as journaled: what was asked, what came back, what it cost."""

    model: str  # the model that answered (after routing and fallbacks)
    provider: str | None = None
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[float] | None = None  # per output token, when the provider returns them
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    cache_hit: bool = False
    # The provider call's own time: when it was sent (epoch seconds) and how long it took,
    # without the setup before it (LiteLLM's first import, rate limits, budget checks).
    started_at: float | None = None
    latency_ms: float = 0.0
    tried: list[str] = Field(default_factory=list)  # models attempted, in order
    request: dict[str, Any] = Field(default_factory=dict)  # messages and parameters sent
    # How the context was assembled to fit its token budget (keel.memory.Assembly.record)
    context: dict[str, Any] | None = None

    def assistant_message(self) -> Message:
        msg: Message = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        return msg


def as_messages(prompt: str | list[Message], system: str | None = None) -> list[Message]:
    """A prompt string or a message list, with an optional system message first."""
    if isinstance(prompt, str):
        messages: list[Message] = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        messages = [dict(m) for m in prompt]
    else:
        from keel.errors import ConfigError

        raise ConfigError(
            "a prompt is a string or a list of {'role': ..., 'content': ...} messages, "
            f"not {type(prompt).__name__}"
        )
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return messages
