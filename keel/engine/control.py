"""How a run's execution is steered from inside: suspend, abandon, drain; the current step."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


class Suspend(BaseException):
    """Unwinds a run that must wait (timer or signal); BaseException so user code can't eat it."""

    def __init__(self, wake_at: float | None = None, signals: frozenset[str] = frozenset()):
        super().__init__("run suspended")
        self.wake_at = wake_at
        self.signals = signals

    def merge(self, other: Suspend) -> Suspend:
        wakes = [w for w in (self.wake_at, other.wake_at) if w is not None]
        return Suspend(min(wakes) if wakes else None, self.signals | other.signals)


class Abandon(BaseException):
    """This worker must stop executing the run without writing (lease lost, fatal error)."""


class Drain(Abandon):
    """The worker is draining (`Worker.drain`): stop before a new step, hand the run back.

    An `Abandon`, so everything that lets an abandon through (map lanes finish the
    item in hand first) lets a drain through too.
    """


@dataclass(frozen=True, slots=True)
class StepInfo:
    """The step currently executing, for tools that need an idempotency key.

    Example:
        info = keel.current_step()
        stripe.charge(..., idempotency_key=info.idempotency_key)
    """

    run_id: str
    key: str
    attempt: int
    feedback: tuple[str, ...] = ()  # why the previous attempt's output failed validation

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.key}"


CURRENT_STEP: ContextVar[StepInfo | None] = ContextVar("keel_current_step", default=None)


def current_step() -> StepInfo | None:
    """The journaled step running in this task, or None outside a step."""
    return CURRENT_STEP.get()
