"""Record a real provider's responses once; replay them deterministically offline.

In record mode calls go to the real provider and each response is appended to a
JSONL file under the request's digest. In replay mode every model is reached
through the `keel-cassette` LiteLLM custom provider, which answers from the
file; a request with no recording is a `CassetteMiss` naming the request.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Literal

from keel.errors import CassetteMiss, ConfigError

PROVIDER = "keel-cassette"
_active: dict[str, Cassette] = {}
# LiteLLM's offline stand-ins for a provider: a request recorded with them replays
# without them, and in replay the cassette answers, never a mock.
MOCKS = frozenset({"mock_response", "mock_tool_calls", "mock_delay"})
# Not part of a request's identity.
_IGNORED = {"timeout", "metadata", "api_key", "api_base", "stream", "num_retries", *MOCKS}


def request_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    body = {
        "model": model,
        "messages": messages,
        "params": {k: v for k, v in sorted(params.items()) if k not in _IGNORED},
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]


class Cassette:
    """A file of recorded model responses.

    Example:
        gw = keel.llm.Gateway(models={"fast": "openai/gpt-4o-mini"},
                              cassette=keel.llm.Cassette("tests/cassettes/triage.jsonl"))
        # KEEL_CASSETTE_MODE=record once with a key set; replay (the default) after that
    """

    def __init__(self, path: str | Path, mode: Literal["replay", "record"] | None = None) -> None:
        import os

        self.path = Path(path)
        chosen = mode or os.environ.get("KEEL_CASSETTE_MODE", "replay")
        if chosen not in ("replay", "record"):
            raise ConfigError(f"cassette mode must be 'replay' or 'record', got {chosen!r}")
        self.mode: Literal["replay", "record"] = chosen  # type: ignore[assignment]
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for n, line in enumerate(self.path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError):
                    raise ConfigError(f"{self.path}:{n}: not a cassette entry") from None
        elif self.mode == "replay":
            raise ConfigError(
                f"cassette {self.path} does not exist; record it first with "
                "KEEL_CASSETTE_MODE=record and a provider key"
            )
        _active[str(self.path.resolve())] = self

    @property
    def id(self) -> str:
        return str(self.path.resolve())

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        entry = self._entries.get(key)
        if entry is None:
            last = next(
                (m.get("content") for m in reversed(messages) if m.get("role") == "user"), None
            )
            raise CassetteMiss(
                f"cassette {self.path} has no recording for model {model!r} with last user "
                f"message {str(last)[:160]!r} (request {key}); re-record with "
                "KEEL_CASSETTE_MODE=record",
                request=key,
                model=model,
            )
        response: dict[str, Any] = entry["response"]
        return response

    def record(
        self, key: str, model: str, messages: list[dict[str, Any]], response: dict[str, Any]
    ) -> None:
        entry = {"key": key, "model": model, "messages": messages, "response": response}
        with self._lock:
            self._entries[key] = entry
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(entry, default=str) + "\n")


def provider() -> Any:
    """The LiteLLM CustomLLM that answers from the active cassette."""
    from keel.llm._litellm import litellm

    litellm()  # imported the quiet, offline way before anything else touches it
    from litellm import CustomLLM, ModelResponse

    class CassetteProvider(CustomLLM):  # type: ignore[misc]
        async def acompletion(
            self, model: str, messages: list[dict[str, Any]], *args: Any, **kw: Any
        ) -> Any:
            meta = (kw.get("litellm_params") or {}).get("metadata") or {}
            cassette = _active.get(meta.get("keel_cassette", ""))
            if cassette is None:
                raise CassetteMiss(f"no active cassette for a {model!r} request")
            data = cassette.lookup(meta["keel_request"], meta.get("keel_model", model), messages)
            return ModelResponse(**data)

    return CassetteProvider()
