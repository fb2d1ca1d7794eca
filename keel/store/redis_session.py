"""Session state in Redis (`KEEL_SESSION_STORE=redis://host:port/db`): the same
`SessionStateStore` as Keel's store, for short-lived sessions whose expiry Redis keeps.

A value is a hash (`v` JSON, `w` writer, `n` version) with a native TTL; every write is
one Lua script, so its condition, the write and its receipt are atomic. Both keys of a
session share a hash tag, so a Redis Cluster keeps them in one slot. `redis.asyncio` is
imported when the first call is made, never by `import keel`.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from keel.errors import StoreError
from keel.store.session_state import (
    ANY,
    RECEIPT_TTL,
    Expect,
    SessionEntry,
    SessionStateStore,
)

# KEYS: the value, the receipt. ARGV: value JSON ('' deletes), writer, ttl in ms ('0':
# none), receipt ttl in s, mode ('any' | 'absent' | 'writer'), the writer expected.
_WRITE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
if ARGV[5] == 'absent' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
elseif ARGV[5] == 'writer' then
  if redis.call('HGET', KEYS[1], 'w') ~= ARGV[6] then return 0 end
end
if ARGV[1] == '' then
  if redis.call('DEL', KEYS[1]) == 0 then return 0 end
else
  redis.call('HINCRBY', KEYS[1], 'n', 1)
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'w', ARGV[2])
  if ARGV[3] ~= '0' then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  else
    redis.call('PERSIST', KEYS[1])
  end
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[4])
return 1
"""


class RedisSessionStore(SessionStateStore):
    """Session state in one Redis database.

    Example:
        sessions = RedisSessionStore("redis://127.0.0.1:6379/0")
        await sessions.session_write("s1", "cart", "[1]", writer="r1 session.set#0")
        await sessions.close()
    """

    def __init__(self, url: str, *, prefix: str = "keel:") -> None:
        self.url = url
        self.prefix = prefix
        self._client: Any = None
        self._script: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self.url, decode_responses=True)
            self._script = self._client.register_script(_WRITE)
        return self._client

    def _keys(self, session: str, key: str) -> tuple[str, str]:
        # The length makes (session, key) pairs unambiguous; "{...}" is the hash tag.
        tag = f"{self.prefix}{len(session)}{{{session}}}"
        return f"{tag}:v:{key}", f"{tag}:r:"

    async def session_get(self, session: str, key: str) -> SessionEntry | None:
        item, _ = self._keys(session, key)
        v, w, n = await self._do(self._redis().hmget(item, "v", "w", "n"))
        return None if v is None else SessionEntry(v, w or "", int(n or 0))

    async def session_write(
        self,
        session: str,
        key: str,
        value: str | None,
        *,
        writer: str,
        ttl: float | None = None,
        expect: str | Expect | None = ANY,
    ) -> bool:
        item, receipts = self._keys(session, key)
        self._redis()
        mode = "any" if expect is ANY else "absent" if expect is None else "writer"
        ms = "0" if ttl is None else str(max(1, math.ceil(ttl * 1000)))
        args = [value or "", writer, ms, int(RECEIPT_TTL), mode, expect if mode == "writer" else ""]
        done = await self._do(self._script(keys=[item, receipts + writer], args=args))
        return bool(done)

    async def session_applied(self, session: str, writer: str) -> bool:
        _, receipts = self._keys(session, "")
        return bool(await self._do(self._redis().exists(receipts + writer)))

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _do(self, call: Any) -> Any:
        from redis.exceptions import ConnectionError as RedisDown
        from redis.exceptions import TimeoutError as RedisSlow

        try:
            return await call
        except (RedisDown, RedisSlow, OSError) as exc:
            where = _safe(self.url)
            raise StoreError(
                f"session store {where} is unreachable ({exc}). No run was failed: a run"
                " that reads or writes ctx.session pauses and resumes from its journal once"
                " Redis answers; check that redis-server is running at that address, or"
                " unset KEEL_SESSION_STORE to keep session state in Keel's store",
                store=where,
                reason=str(exc),
                kind="unreachable",
            ) from None


def _safe(url: str) -> str:
    """`url` with its password hidden, fit for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, "", ""))


__all__ = ["RedisSessionStore"]
