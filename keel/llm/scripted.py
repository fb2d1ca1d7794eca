"""`ScriptedModel`: a deterministic offline model behind a real LiteLLM custom provider.

Tests, the demo and CI run every model call through LiteLLM exactly as a hosted
model would be called; only the provider at the end is a Python function.
Usage is counted from the actual text with LiteLLM's tokenizer.
"""

from __future__ import annotations

import inspect
import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from keel.errors import ConfigError
from keel.llm.types import Message

PROVIDER = "keel-scripted"
_registry: dict[str, ScriptedModel] = {}
_names = itertools.count(1)
_lock = threading.Lock()


class Reply(BaseModel):
    """What a scripted model answers: text and/or tool calls, optional logprobs and usage."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)  # {"name", "arguments"}
    logprobs: list[float] | None = None
    input_tokens: int | None = None  # None: counted from the messages
    output_tokens: int | None = None  # None: counted from the reply


Script = Callable[..., "str | Reply | dict[str, Any] | BaseModel"]
Matcher = "str | re.Pattern[str] | Callable[[list[Message]], bool]"


class ScriptedModel:
    """An offline model: a function or rules mapping the messages to a reply.

    Example:
        model = keel.llm.ScriptedModel(lambda messages: "billing")
        app = keel.App(llm=model)

        rules = keel.llm.ScriptedModel(rules=[("refund", "billing"), (r"(?i)down", "outage")],
                                       default="general")
    """

    def __init__(
        self,
        fn: Script | None = None,
        *,
        rules: Sequence[tuple[Any, Any]] | None = None,
        default: Any = None,
        name: str | None = None,
        logprob: float | None = None,
        price_as: str | None = None,
        latency: float = 0.0,
        keep_calls: int = 1000,
    ) -> None:
        if fn is None and not rules and default is None:
            raise ConfigError("ScriptedModel needs a function, rules, or a default reply")
        self.fn = fn
        self.rules = list(rules or [])
        self.default = default
        self.logprob = logprob  # per-token logprob reported when logprobs are requested
        self.price_as = price_as  # price tokens like this real model (for budget demos)
        self.latency = latency
        # The latest requests, for tests; bounded so a long-running worker does not grow.
        self.calls: deque[dict[str, Any]] = deque(maxlen=keep_calls)
        self.total = 0  # every request answered, including those `calls` no longer keeps
        with _lock:
            self.name = name or f"scripted-{next(_names)}"
            _registry[self.name] = self

    @property
    def model(self) -> str:
        """The LiteLLM model string that reaches this script."""
        return f"{PROVIDER}/{self.name}"

    def __repr__(self) -> str:
        return f"<ScriptedModel {self.name}>"

    def reply(self, messages: list[Message], params: dict[str, Any]) -> Reply:
        self.calls.append({"messages": messages, "params": params})
        self.total += 1
        if self.fn is not None:
            return _as_reply(_call(self.fn, messages, params))
        for matcher, answer in self.rules:
            if _matches(matcher, messages):
                return _as_reply(_call(answer, messages, params) if callable(answer) else answer)
        if self.default is not None:
            d = self.default
            return _as_reply(_call(d, messages, params) if callable(d) else d)
        last = _last_user(messages)
        raise ConfigError(f"ScriptedModel {self.name}: no rule matches {last[:120]!r}")


def _call(fn: Callable[..., Any], messages: list[Message], params: dict[str, Any]) -> Any:
    try:
        n = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        n = 1
    return fn(messages, params) if n >= 2 else fn(messages)


def _last_user(messages: list[Message]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def _matches(matcher: Any, messages: list[Message]) -> bool:
    if isinstance(matcher, str):
        return matcher.lower() in _last_user(messages).lower()
    if isinstance(matcher, re.Pattern):
        return matcher.search(_last_user(messages)) is not None
    return bool(matcher(messages))


def _as_reply(value: Any) -> Reply:
    if isinstance(value, Reply):
        return value
    if isinstance(value, str):
        return Reply(content=value)
    if isinstance(value, BaseModel):  # a structured answer: its JSON
        return Reply(content=value.model_dump_json())
    if isinstance(value, dict):
        if "content" in value or "tool_calls" in value:
            return Reply.model_validate(value)
        return Reply(content=json.dumps(value))
    raise ConfigError(
        f"a scripted reply is a str, dict, Reply or model, not {type(value).__name__}"
    )


def lookup(name: str) -> ScriptedModel:
    model = _registry.get(name)
    if model is None:
        raise ConfigError(f"no ScriptedModel named {name!r} in this process")
    return model


def provider() -> Any:
    """The LiteLLM CustomLLM that answers `keel-scripted/<name>` models."""
    from keel.llm._litellm import litellm

    litellm()  # imported the quiet, offline way before anything else touches it
    from litellm import CustomLLM

    class ScriptedProvider(CustomLLM):  # type: ignore[misc]
        async def acompletion(
            self, model: str, messages: list[Message], *args: Any, **kw: Any
        ) -> Any:
            return await _respond(model, messages, kw.get("optional_params") or {})

        def completion(self, model: str, messages: list[Message], *args: Any, **kw: Any) -> Any:
            import asyncio

            return asyncio.run(_respond(model, messages, kw.get("optional_params") or {}))

    return ScriptedProvider()


async def _respond(model: str, messages: list[Message], params: dict[str, Any]) -> Any:
    from litellm import ModelResponse
    from litellm.types.utils import (
        ChatCompletionMessageToolCall,
        Choices,
        Function,
        Usage,
    )
    from litellm.types.utils import (
        Message as LMessage,
    )

    from keel.llm._litellm import count_tokens

    scripted = lookup(model.split("/", 1)[-1])
    if scripted.latency:
        import asyncio

        await asyncio.sleep(scripted.latency)
    reply = scripted.reply(messages, params)
    tokenizer = scripted.price_as or "gpt-4o-mini"
    calls = [
        ChatCompletionMessageToolCall(
            id=f"call_{i}_{int(time.time() * 1e6) % 10**8}",
            type="function",
            function=Function(
                name=c["name"],
                arguments=c["arguments"]
                if isinstance(c.get("arguments"), str)
                else json.dumps(c.get("arguments", {})),
            ),
        )
        for i, c in enumerate(reply.tool_calls)
    ]
    out_text = (reply.content or "") + "".join(c.function.arguments for c in calls)
    output_tokens = reply.output_tokens
    if output_tokens is None:
        output_tokens = count_tokens(tokenizer, text=out_text) if out_text else 0
    input_tokens = reply.input_tokens
    if input_tokens is None:
        input_tokens = count_tokens(tokenizer, messages=messages)
    response = ModelResponse(
        model=scripted.name,
        choices=[
            Choices(
                index=0,
                finish_reason="tool_calls" if calls else "stop",
                message=LMessage(role="assistant", content=reply.content, tool_calls=calls or None),
            )
        ],
        usage=Usage(
            prompt_tokens=input_tokens,
            completion_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        ),
    )
    logprobs = reply.logprobs
    if logprobs is None and params.get("logprobs") and scripted.logprob is not None:
        logprobs = [scripted.logprob] * max(1, output_tokens)
    if logprobs is not None:
        response.choices[0].logprobs = {
            "content": [{"token": "", "logprob": lp} for lp in logprobs]
        }
    return response
