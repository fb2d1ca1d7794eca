"""Circuit breaker: stop calling a tool that keeps failing, probe again after a cool-down."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CircuitBreaker:
    """Opens after `failures` consecutive failed attempts; half-opens after `reset_after` s.

    One breaker state per tool per worker process. While open, calls go straight to
    the tool's fallback without being attempted.

    Example: `@app.tool(breaker=keel.CircuitBreaker(failures=5, reset_after=30))`
    """

    failures: int = 5
    reset_after: float = 30.0

    def __post_init__(self) -> None:
        if self.failures < 1 or self.reset_after < 0:
            raise ValueError("CircuitBreaker needs failures >= 1 and reset_after >= 0")


@dataclass
class BreakerState:
    """The live state of one tool's breaker in this process."""

    config: CircuitBreaker
    consecutive: int = 0
    opened_at: float | None = None
    probing: bool = False
    clock: object = field(default=time.monotonic, repr=False)

    def _now(self) -> float:
        return self.clock()  # type: ignore[operator, no-any-return]

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self._now() - self.opened_at >= self.config.reset_after:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """May an attempt go ahead now? In half-open, exactly one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.consecutive = 0
        self.opened_at = None
        self.probing = False

    def failure(self) -> None:
        self.consecutive += 1
        if self.probing or self.consecutive >= self.config.failures:
            self.opened_at = self._now()
        self.probing = False

    def abandon(self) -> None:
        """The probe ended without a verdict (cancelled, run suspended): allow another."""
        self.probing = False

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.config.reset_after - (self._now() - self.opened_at))
