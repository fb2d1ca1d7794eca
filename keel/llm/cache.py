"""The gateway's response cache: an exact match on model + messages + parameters, with
a TTL, kept in the Keel store or, when the gateway has a `redis_url`, in Redis (sealed
there with the store's codec, like every payload). Which calls use it is the gateway's
to decide (`Gateway._caches`)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from keel.llm.types import LLMResponse, Message

# Parameters that do not change what a model answers: left out of cache keys.
_NON_SEMANTIC = {"timeout", "metadata", "api_key", "api_base", "num_retries", "user"}


def cache_key(target: str, messages: list[Message], params: dict[str, Any]) -> str:
    body = {
        "model": target,
        "messages": messages,
        "params": {k: v for k, v in sorted(params.items()) if k not in _NON_SEMANTIC},
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode())
    return "llm:" + digest.hexdigest()


async def cache_get(key: str, redis: Any, store: Any) -> LLMResponse | None:
    """The cached reply for `key`, from Redis when there is a client, else the store."""
    if redis is not None:
        raw = await redis.get(key)
        codec = getattr(store, "codec", None)
        if raw is not None and raw[:1] == b"\x00":  # sealed by the store's codec
            from keel.store import _sealed

            raw = _sealed.unseal(codec, raw, "redis.llm_cache", (key,))
        text = raw.decode() if isinstance(raw, bytes) else raw
    elif store is not None:
        text = await store.cache_get(key, time.time())
    else:
        return None
    return LLMResponse.model_validate_json(text) if text else None


async def cache_put(key: str, resp: LLMResponse, redis: Any, store: Any, ttl: float | None) -> None:
    """Keep `resp` under `key` for `ttl` seconds (None or 0: until evicted)."""
    text = resp.model_dump_json()
    if redis is not None:
        codec = getattr(store, "codec", None)  # a reply is a payload: sealed like one
        if codec is not None:
            from keel.store import _sealed

            value: str | bytes = _sealed.seal(codec, text.encode(), "redis.llm_cache", (key,))
        else:
            value = text
        if ttl:
            await redis.set(key, value, ex=int(max(1, ttl)))
        else:
            await redis.set(key, value)
    elif store is not None:
        expires = time.time() + ttl if ttl else None
        await store.cache_put(key, text, expires)
