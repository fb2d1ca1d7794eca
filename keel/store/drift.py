"""`DriftStore`: what drift monitors (`keel.drift`) observe, one value per run and
monitor, and each monitor's settings, so `keel drift report` and the console can judge
drift from the store alone, without the application's code."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DriftValue:
    """One monitor's observation of one finished run: a number (`value`) or a category
    (`label`); `at` is when the run ended, `seq` the order of storing (0 before).

    Example:
        DriftValue("triage", "distribution:category", "run-1", at=1.7e9, label="billing")
    """

    workflow: str
    monitor: str
    run_id: str
    at: float
    value: float | None = None
    label: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class DriftMonitorSpec:
    """A monitor's settings as JSON (`keel.drift.Monitor.spec()`), per workflow."""

    workflow: str
    monitor: str
    spec: dict[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0


class DriftStore(abc.ABC):
    """Stored drift observations and monitor settings.

    Example:
        await store.add_drift_values([DriftValue("triage", "approval_rate", "r1", 1.7e9, 1.0)])
        recent = await store.drift_values("triage", "approval_rate", limit=100)
    """

    @abc.abstractmethod
    async def put_drift_monitors(self, specs: list[DriftMonitorSpec]) -> None:
        """Create or replace these monitors' settings."""

    @abc.abstractmethod
    async def list_drift_monitors(self, workflow: str | None = None) -> list[DriftMonitorSpec]:
        """Monitors' settings by workflow then monitor (only `workflow`'s when given)."""

    @abc.abstractmethod
    async def add_drift_values(self, values: list[DriftValue]) -> int:
        """Store observations in one transaction; one already stored for the same
        workflow, monitor and run is kept, not duplicated. Returns how many were new."""

    @abc.abstractmethod
    async def drift_values(
        self,
        workflow: str,
        monitor: str,
        limit: int,
        *,
        before: tuple[float, int] | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> list[DriftValue]:
        """The `limit` observations of one monitor whose runs ended last, oldest first
        (by end time, then sequence): only those before `before` (an `(at, seq)` pair,
        e.g. a window's oldest) and with `at` in `[start, end)`, when given."""
