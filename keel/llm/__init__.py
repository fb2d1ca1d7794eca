"""The LLM gateway on LiteLLM: `Gateway`, offline `ScriptedModel`, record/replay `Cassette`.

Nothing here imports LiteLLM until the first model call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Gateway": "keel.llm.gateway",
    "ModelSpec": "keel.llm.gateway",
    "Budgets": "keel.llm.gateway",
    "ScriptedModel": "keel.llm.scripted",
    "Reply": "keel.llm.scripted",
    "Cassette": "keel.llm.cassette",
    "LLMResponse": "keel.llm.types",
    "ToolCall": "keel.llm.types",
    "AgentResult": "keel.llm.facade",
}

__all__ = [
    "AgentResult",
    "Budgets",
    "Cassette",
    "Gateway",
    "LLMResponse",
    "ModelSpec",
    "Reply",
    "ScriptedModel",
    "ToolCall",
]

if TYPE_CHECKING:
    from keel.llm.cassette import Cassette
    from keel.llm.facade import AgentResult
    from keel.llm.gateway import Budgets, Gateway, ModelSpec
    from keel.llm.scripted import Reply, ScriptedModel
    from keel.llm.types import LLMResponse, ToolCall


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.llm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
