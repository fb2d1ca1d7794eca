"""The one place Keel touches LiteLLM: imported on the first model call, never by `import keel`.

LiteLLM is loaded with its bundled cost map (no network fetch) and kept quiet;
Keel's offline providers (scripted models, cassettes) are registered as LiteLLM
custom providers, so every call takes the same code path as a real one.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from keel.llm.types import LLMResponse, ToolCall, Usage

_lock = threading.Lock()
_litellm: Any = None
_providers: dict[str, Any] = {}


def litellm() -> Any:
    """The LiteLLM module, imported once, offline and quiet."""
    global _litellm
    if _litellm is None:
        with _lock:
            if _litellm is None:
                os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                os.environ.setdefault("LITELLM_LOG", "ERROR")
                import litellm as lib

                lib.suppress_debug_info = True
                lib.set_verbose = False
                lib.telemetry = False
                for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
                    logging.getLogger(name).setLevel(logging.ERROR)
                _litellm = lib
    return _litellm


def register_provider(name: str, handler: Any) -> None:
    """Install a LiteLLM CustomLLM under `name` (models are then `name/<model>`)."""
    lib = litellm()
    with _lock:
        if _providers.get(name) is handler:
            return
        _providers[name] = handler
        lib.custom_provider_map = [
            item for item in lib.custom_provider_map if item["provider"] != name
        ] + [{"provider": name, "custom_handler": handler}]
        from litellm.utils import custom_llm_setup

        custom_llm_setup()


def count_tokens(
    model: str, messages: list[dict[str, Any]] | None = None, text: str | None = None
) -> int:
    """Tokens as LiteLLM counts them for `model` (tiktoken's default for unknown models)."""
    lib = litellm()
    try:
        if text is not None:
            return int(lib.token_counter(model=model, text=text))
        return int(lib.token_counter(model=model, messages=messages or []))
    except Exception:  # an unknown tokenizer must not fail a call: estimate
        chars = len(text or "") + sum(len(str(m.get("content") or "")) for m in messages or [])
        return max(1, chars // 4)


def price(model: str, input_tokens: int, output_tokens: int) -> float:
    """USD from LiteLLM's bundled cost map; 0.0 for models it does not know."""
    lib = litellm()
    try:
        a, b = lib.cost_per_token(
            model=model, prompt_tokens=input_tokens, completion_tokens=output_tokens
        )
        return float(a) + float(b)
    except Exception:
        return 0.0


def knows_price(model: str) -> bool:
    lib = litellm()
    try:
        lib.cost_per_token(model=model, prompt_tokens=1, completion_tokens=1)
        return True
    except Exception:
        return False


def provider_of(model: str) -> str | None:
    """The provider LiteLLM routes `model` to (None when it cannot tell)."""
    try:
        return str(litellm().get_llm_provider(model)[1])
    except Exception:
        return None


def convert(raw: Any, model: str) -> LLMResponse:
    """LiteLLM's ModelResponse -> Keel's journaled LLMResponse."""
    choice = raw.choices[0]
    message = choice.message
    calls = []
    for i, tc in enumerate(getattr(message, "tool_calls", None) or []):
        fn = tc.function if hasattr(tc, "function") else tc["function"]
        name = fn.name if hasattr(fn, "name") else fn["name"]
        args = fn.arguments if hasattr(fn, "arguments") else fn["arguments"]
        tc_id = getattr(tc, "id", None) or (tc.get("id") if isinstance(tc, dict) else None)
        calls.append(ToolCall(id=tc_id or f"call_{i}", name=name, arguments=args or "{}"))
    usage = getattr(raw, "usage", None)
    logprobs = _logprobs(getattr(choice, "logprobs", None))
    hidden = getattr(raw, "_hidden_params", {}) or {}
    return LLMResponse(
        model=model,
        provider=hidden.get("custom_llm_provider"),
        content=message.content,
        tool_calls=calls,
        finish_reason=choice.finish_reason,
        logprobs=logprobs,
        usage=Usage(
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        ),
    )


def _logprobs(lp: Any) -> list[float] | None:
    if lp is None:
        return None
    content = lp.get("content") if isinstance(lp, dict) else getattr(lp, "content", None)
    if not content:
        return None
    out = []
    for tok in content:
        value = tok.get("logprob") if isinstance(tok, dict) else getattr(tok, "logprob", None)
        if value is not None:
            out.append(float(value))
    return out or None
