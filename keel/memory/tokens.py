"""Counting tokens the way the model does, with an offline bound that never under-counts.

`TokenCounter(model)` asks LiteLLM's `token_counter` (the model's own tokenizer where
LiteLLM knows it, tiktoken's files shipped in the package otherwise: no network). It
counts tool calls' arguments and tool schemas too (checked in tests/test_memory_tokens.py:
a 400-byte argument adds ~60 tokens, a tool's description is counted). When LiteLLM is
missing or fails, `fallback_count` takes over: one token per UTF-8 byte plus a
per-message overhead. That is generous on purpose: byte-level BPE tokenizers (tiktoken,
Claude's, Llama 3's) never make a token of less than one byte, so a byte count is an
upper bound, whereas bytes / 3 under-counts text such as `"x " * 300` (310 real tokens,
200 by bytes / 3).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

Message = dict[str, Any]

# What a message costs besides its text (role, separators) and the reply's priming: the
# chat formats add 3-5 tokens a message and 3 a request; 8 is above all of them.
_PER_MESSAGE = 8
_CACHE_SIZE = 4096


class Counter(Protocol):
    """Anything that counts a message list's tokens (and a request's tool schemas)."""

    def count(self, messages: Sequence[Message], tools: Sequence[Message] | None = None) -> int:
        """Tokens of `messages` (and `tools`) as one request."""
        ...


def _text_of(message: Message) -> str:
    """Every string the model reads in one message, tool calls included."""
    return json.dumps(message, ensure_ascii=False, sort_keys=True, default=str)


def fallback_count(messages: Sequence[Message], tools: Sequence[Message] | None = None) -> int:
    """An upper bound of the tokens of `messages` (and `tools`) for any byte-level tokenizer.

    Example:
        fallback_count([{"role": "user", "content": "hello"}])  # 41: bytes of the JSON + 8
    """
    total = 0 if not messages else 3
    for m in messages:
        total += len(_text_of(m).encode()) + _PER_MESSAGE
    if tools:
        total += len(json.dumps(list(tools), ensure_ascii=False).encode())
    return total


class ByteCounter:
    """`fallback_count` as a `Counter`: offline, deterministic, never under the real count.

    Example:
        Window(2000, counter=ByteCounter())
    """

    exact = False

    def count(self, messages: Sequence[Message], tools: Sequence[Message] | None = None) -> int:
        """An upper bound of the tokens of `messages` (and `tools`), summed per message."""
        return sum(fallback_count([m]) for m in messages) + (
            fallback_count([], tools) if tools else 0
        )


class TokenCounter:
    """Counts tokens with the model's tokenizer via LiteLLM, else `fallback_count`.

    Counts are cached per message (an agent loop recounts the same history each turn).

    Example:
        counter = TokenCounter("openai/gpt-4o-mini")
        counter.count([{"role": "user", "content": "hello world"}])  # 9
    """

    def __init__(self, model: str | None = None) -> None:
        self.model = model or ""
        self.exact = True  # False once a count fell back to the byte bound
        self._cache: OrderedDict[str, int] = OrderedDict()

    def count(self, messages: Sequence[Message], tools: Sequence[Message] | None = None) -> int:
        """Tokens of `messages` (and `tools`) as one request: the sum of each message's
        own count, each with the request overhead, so never less than the real count."""
        total = sum(self._one(m) for m in messages)
        if tools:
            total += self._cached("tools:" + json.dumps(list(tools), sort_keys=True), None, tools)
        return total

    def _one(self, message: Message) -> int:
        return self._cached(_text_of(message), message, None)

    def _cached(self, key: str, message: Message | None, tools: Sequence[Message] | None) -> int:
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        msgs = [] if message is None else [message]
        n = self._litellm(msgs, tools)
        if n is None:
            self.exact = False
            n = fallback_count(msgs, tools)
        self._cache[key] = n
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return n

    def _litellm(self, messages: list[Message], tools: Sequence[Message] | None) -> int | None:
        try:
            from keel.llm._litellm import litellm

            n = litellm().token_counter(
                model=self.model, messages=messages, tools=list(tools) if tools else None
            )
        except Exception:  # no tokenizer for this model, or LiteLLM is missing
            return None
        return int(n) if isinstance(n, int) and n >= 0 else None


def context_window(model: str, reserve: int | None = None) -> int | None:
    """The input tokens a model takes (LiteLLM's model map) minus `reserve` for the reply;
    None when LiteLLM does not know the model.

    Example:
        context_window("openai/gpt-4o-mini", reserve=4096)  # 123904
    """
    try:
        from keel.llm._litellm import litellm

        info = litellm().get_model_info(model)
    except Exception:  # unknown model (scripted, a cassette, a private deployment)
        return None
    window = info.get("max_input_tokens") or info.get("max_tokens")
    if not isinstance(window, int) or window <= 0:
        return None
    out = reserve if reserve is not None else min(info.get("max_output_tokens") or 4096, 4096)
    return max(window - int(out), 0) or None


__all__ = ["ByteCounter", "Counter", "TokenCounter", "context_window", "fallback_count"]
