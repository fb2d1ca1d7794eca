"""Client-side request and token rate limits, shared by every concurrent step.

Per process: a token bucket per model (continuous refill). Across processes:
a fixed one-minute window counted in Redis when the gateway has a Redis URL.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


class TokenBucket:
    """`rate` units per minute with a burst of `rate`; `take` waits until they are there."""

    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be positive, got {per_minute}")
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.refill = per_minute / 60.0
        self.stamp = time.monotonic()

    def _top_up(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.refill)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if now); takes it when available."""
        self._top_up()
        amount = min(amount, self.capacity)  # one oversized request waits for a full bucket
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) / self.refill


class RateLimiter:
    """RPM and TPM limits for one model; `acquire(tokens)` before each request."""

    def __init__(
        self, rpm: float | None = None, tpm: float | None = None, redis: Any = None, key: str = ""
    ) -> None:
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None
        self.rpm, self.tpm = rpm, tpm
        self.redis = redis
        self.key = key
        self._lock = asyncio.Lock()
        self._loop: Any = None  # the event loop `_lock` belongs to

    def _fifo(self) -> asyncio.Lock:
        """The waiting line, one per event loop (each `App.run` has its own loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    async def acquire(self, tokens: int) -> float:
        """Wait until one request of `tokens` may go; returns the seconds waited."""
        if self.redis is not None:
            return await self._acquire_redis(tokens)
        waited = 0.0
        async with self._fifo():  # FIFO: waiting requests keep their order
            while True:
                delay = 0.0
                if self.requests is not None:
                    delay = self.requests.wait_for(1)
                    if delay:
                        await asyncio.sleep(delay)
                        waited += delay
                        continue
                if self.tokens is not None:
                    delay = self.tokens.wait_for(tokens)
                    if delay:
                        if self.requests is not None:
                            self.requests.level += 1  # give the request slot back meanwhile
                        await asyncio.sleep(delay)
                        waited += delay
                        continue
                return waited

    async def _acquire_redis(self, tokens: int) -> float:
        waited = 0.0
        while True:
            window = int(time.time() // 60)
            rkey, tkey = f"keel:rl:{self.key}:r:{window}", f"keel:rl:{self.key}:t:{window}"
            pipe = self.redis.pipeline()
            pipe.incrby(rkey, 1)
            pipe.expire(rkey, 120)
            pipe.incrby(tkey, tokens)
            pipe.expire(tkey, 120)
            reqs, _, toks, _ = await pipe.execute()
            over = (self.rpm and reqs > self.rpm) or (
                self.tpm and toks > self.tpm and toks != tokens
            )
            if not over:
                return waited
            pipe = self.redis.pipeline()  # not admitted in this window: undo and wait for the next
            pipe.decrby(rkey, 1)
            pipe.decrby(tkey, tokens)
            await pipe.execute()
            delay = (window + 1) * 60 - time.time() + 0.01
            await asyncio.sleep(delay)
            waited += delay
