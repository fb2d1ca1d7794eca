"""Model messages in the shapes of the OpenTelemetry GenAI conventions.

`gen_ai.input.messages` is a list of `{"role", "parts"}` (system messages included:
with chat-completion APIs they are part of the chat history), `gen_ai.output.messages`
a list of `{"role": "assistant", "parts", "finish_reason"}`. Parts are
`{"type": "text", "content"}`, `{"type": "tool_call", "id", "name", "arguments"}` and
`{"type": "tool_call_response", "id", "response"}` (images and audio as `uri` / `blob`
parts). Tool arguments and responses that are JSON text are given as JSON values.
"""

from __future__ import annotations

import json
from typing import Any

# The conventions' finish reasons, from the OpenAI-style ones LiteLLM reports.
_FINISH = {"tool_calls": "tool_call", "function_call": "tool_call"}


def input_messages(messages: Any) -> list[dict[str, Any]]:
    """OpenAI-style chat messages as `gen_ai.input.messages`."""
    if not isinstance(messages, list):
        return []
    return [_message(m) for m in messages if isinstance(m, dict)]


def output_messages(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A journaled `LLMResponse` (as JSON) as `gen_ai.output.messages`: one choice."""
    calls = response.get("tool_calls") or []
    parts = _content(response.get("content"))
    parts += [_tool_call(c.get("id"), c.get("name"), c.get("arguments")) for c in calls]
    reason = str(response.get("finish_reason") or "")
    return [
        {
            "role": "assistant",
            "parts": _compact(parts),
            # required by the conventions: when the provider gave none, what the turn did
            "finish_reason": _FINISH.get(reason, reason) or ("tool_call" if calls else "stop"),
        }
    ]


def json_value(value: Any) -> Any:
    """JSON text as the value it encodes (the conventions want objects); else as given."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _message(m: dict[str, Any]) -> dict[str, Any]:
    role = m.get("role") or "user"
    if role in ("tool", "function"):  # a tool's answer to the model
        content = m.get("content")
        if isinstance(content, list):  # text parts: the text
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        part = {
            "type": "tool_call_response",
            "id": m.get("tool_call_id"),
            "response": json_value(content),
        }
        return {"role": "tool", "parts": [part]}
    parts = _content(m.get("content"))
    for call in m.get("tool_calls") or []:
        fn = call.get("function") or {}
        parts.append(_tool_call(call.get("id"), fn.get("name"), fn.get("arguments")))
    legacy = m.get("function_call")
    if isinstance(legacy, dict):
        parts.append(_tool_call(None, legacy.get("name"), legacy.get("arguments")))
    out: dict[str, Any] = {"role": role, "parts": _compact(parts)}
    if m.get("name"):
        out["name"] = m["name"]
    return out


def _compact(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without the empty text beside tool calls (`"content": ""` in a tool-calling turn)."""
    if len(parts) < 2:
        return parts
    return [p for p in parts if p != {"type": "text", "content": ""}]


def _tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": json_value(arguments)}


def _content(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if not isinstance(content, list):
        return [{"type": "text", "content": json.dumps(content, default=str)}]
    return [_part(p) for p in content]


def _part(p: Any) -> dict[str, Any]:
    if isinstance(p, str):
        return {"type": "text", "content": p}
    if not isinstance(p, dict):
        return {"type": "text", "content": json.dumps(p, default=str)}
    kind = p.get("type")
    if kind == "text":
        return {"type": "text", "content": p.get("text", "")}
    if kind == "image_url":
        image = p.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return _media("image", str(url or ""))
    if kind == "input_audio":
        audio = p.get("input_audio") or {}
        fmt = audio.get("format")
        return {
            "type": "blob",
            "modality": "audio",
            "mime_type": f"audio/{fmt}" if fmt else None,
            "content": audio.get("data", ""),
        }
    if isinstance(kind, str):
        return dict(p)  # any other typed part, as it was sent (a generic part)
    return {"type": "text", "content": json.dumps(p, default=str)}


def _media(modality: str, url: str) -> dict[str, Any]:
    """A URL part: inline `data:` URLs are blobs, others are URIs."""
    if url.startswith("data:") and "," in url:
        head, data = url[5:].split(",", 1)
        return {
            "type": "blob",
            "modality": modality,
            "mime_type": head.split(";", 1)[0] or None,
            "content": data,
        }
    return {"type": "uri", "modality": modality, "uri": url}
