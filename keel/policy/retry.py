"""Retry policy: exponential backoff with full jitter, and which errors are worth retrying."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Exception class names of common HTTP/LLM clients that mean "transient", matched by
# name so Keel needs none of those libraries installed.
_TRANSIENT_NAMES = frozenset(
    {
        "ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout",
        "TimeoutException", "NetworkError", "RemoteProtocolError", "ReadError", "WriteError",
        "ClientConnectionError", "ServerDisconnectedError", "ServerTimeoutError",
        "APIConnectionError", "APITimeoutError", "RateLimitError", "InternalServerError",
        "ServiceUnavailableError", "Timeout",
    }
)  # fmt: skip

ErrorMatcher = tuple[type[BaseException], ...] | Callable[[BaseException], bool]


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (httpx, requests, aiohttp, LiteLLM, ...)."""
    for obj in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status", "http_status"):
            value = getattr(obj, attr, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
    return None


def retry_after_of(exc: BaseException, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait (`Retry-After` header or `.retry_after`)."""
    value: Any = getattr(exc, "retry_after", None)
    if value is None:
        for holder in (getattr(exc, "response", None), exc):
            headers = getattr(holder, "headers", None)
            if headers is not None:
                try:
                    value = headers.get("retry-after") or headers.get("Retry-After")
                except AttributeError:
                    value = None
            if value is not None:
                break
    if value is None:
        return None
    if isinstance(value, int | float):
        return max(0.0, float(value))
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:  # an HTTP date
        when = email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (now if now is not None else time.time()))


def is_transient(exc: BaseException) -> bool:
    """Keel's default classification: timeouts, connection errors, 408/429 and 5xx retry."""
    from keel.errors import RetryableError, ValidationFailed

    if isinstance(exc, RetryableError | ValidationFailed):
        return True
    status = status_of(exc)
    if status is not None:
        return status in (408, 429) or status >= 500
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    return any(c.__name__ in _TRANSIENT_NAMES for c in type(exc).__mro__)


def _matches(matcher: ErrorMatcher | None, exc: BaseException) -> bool:
    if matcher is None:
        return False
    if isinstance(matcher, tuple):
        return isinstance(exc, matcher)
    return bool(matcher(exc))


@dataclass(frozen=True)
class Retry:
    """How often and how patiently to retry a failing step.

    Delays grow `backoff * multiplier**(n-1)` up to `max_backoff`; with `jitter` each is
    drawn uniformly from [0, that] ("full jitter"), seeded by `seed` when given. A
    server's Retry-After wins when longer. `deadline` bounds the total time from the
    first attempt; `budget` caps retries of the tool across the whole run (all calls,
    all map items together).

    Example:
        @app.tool(retry=keel.Retry(attempts=4, backoff=0.5, max_backoff=20))
        async def lookup(account_id: str) -> Account: ...
    """

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    multiplier: float = 2.0
    jitter: bool = True
    retry_on: ErrorMatcher | None = None
    give_up_on: ErrorMatcher | None = None
    deadline: float | None = None
    budget: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"Retry(attempts=...) must be >= 1, got {self.attempts}")
        if self.backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("Retry backoff and max_backoff must be >= 0 and multiplier >= 1")
        if self.budget is not None and self.budget < 0:
            raise ValueError(f"Retry(budget=...) must be >= 0, got {self.budget}")

    def should_retry(self, exc: BaseException) -> bool:
        if _matches(self.give_up_on, exc):
            return False
        if _matches(self.retry_on, exc):
            return True
        return is_transient(exc)

    def delay(self, attempt: int, key: str = "", exc: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        try:
            grown = self.backoff * self.multiplier ** (attempt - 1)
        except OverflowError:  # attempt 1000+ of a long-lived retry: capped anyway
            grown = self.max_backoff
        ceiling = min(self.max_backoff, grown)
        if self.jitter:
            rng = random.Random(f"{self.seed}/{key}/{attempt}") if self.seed is not None else random
            wait = rng.uniform(0.0, ceiling)
        else:
            wait = ceiling
        asked = retry_after_of(exc) if exc is not None else None
        return max(wait, asked) if asked is not None else wait


NO_RETRY = Retry(attempts=1)
