"""What a step does once it has failed for good: declared on the tool, never improvised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FallbackKind = Literal["degrade", "human", "fail"]


@dataclass(frozen=True)
class Fallback:
    """A tool's declared last resort.

    Example:
        @app.tool(retry=keel.Retry(attempts=3), fallback=keel.Fallback.degrade(default=None))
        async def enrich(company: str) -> Profile | None: ...
    """

    kind: FallbackKind
    default: Any = None
    queue: str = "escalations"

    @staticmethod
    def degrade(default: Any = None) -> Fallback:
        """Return `default`; the run records the data as missing (`ctx.degraded`)."""
        return Fallback("degrade", default=default)

    @staticmethod
    def human(queue: str = "escalations") -> Fallback:
        """Escalate to a person and suspend until they supply the result or reject."""
        return Fallback("human", queue=queue)

    @staticmethod
    def fail() -> Fallback:
        """Stop the run with a structured error (a hard stop: the workflow cannot catch it)."""
        return Fallback("fail")
