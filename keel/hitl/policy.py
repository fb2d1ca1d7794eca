"""What a human checkpoint looks like: queue, deadline and what happens when it passes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Escalate:
    """On timeout, move the request to another queue with a new deadline.

    Example: `keel.hitl.Approval(timeout=3600, on_timeout=keel.hitl.Escalate("leads", 7200))`
    """

    queue: str
    timeout: float | None = None
    then: Literal["reject", "fail"] = "reject"  # when the escalated deadline passes too


TimeoutPolicy = Literal["reject", "fail"] | Escalate


@dataclass(frozen=True)
class Approval:
    """When and how a tool call or action needs a person's approval.

    `when` (a function of the tool's keyword arguments) limits approval to some calls.

    Example:
        @app.tool(irreversible=True,
                  approval=keel.hitl.Approval(queue="payments", timeout=4 * 3600,
                                              when=lambda amount, **_: amount > 100))
        async def pay(account: str, amount: float) -> Receipt: ...
    """

    queue: str = "approvals"
    timeout: float | None = None
    on_timeout: TimeoutPolicy = "reject"
    when: Callable[..., bool] | None = None
    reason: str | None = None
    context: Callable[[Any], Any] | None = None  # picks what the reviewer sees from the state

    def __post_init__(self) -> None:
        if self.on_timeout not in ("reject", "fail") and not isinstance(self.on_timeout, Escalate):
            raise ValueError(
                f"on_timeout must be 'reject', 'fail' or Escalate(...), got {self.on_timeout!r}"
            )

    def applies(self, kwargs: dict[str, Any]) -> bool:
        return self.when is None or bool(self.when(**kwargs))


@dataclass(frozen=True)
class Sample:
    """Send a uniform sample of a workflow's completed runs to a review queue.

    `rate` samples each run with that probability (seeded by the run id); `per_day`
    keeps a reservoir of that many per UTC day, uniform over the day's runs.

    Example: `@app.workflow(sample=keel.hitl.Sample(per_day=20))`
    """

    rate: float | None = None
    per_day: int | None = None
    queue: str = "review"
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.per_day is None):
            raise ValueError("Sample takes exactly one of rate= or per_day=")
        if self.rate is not None and not 0 < self.rate <= 1:
            raise ValueError(f"Sample rate must be in (0, 1], got {self.rate}")
        if self.per_day is not None and self.per_day < 1:
            raise ValueError(f"Sample per_day must be >= 1, got {self.per_day}")
