"""Observing finished runs: a lifecycle hook that, when a run of a monitored workflow
ends, reads what its monitors need, stores one value per monitor, judges each monitor
and sends an alert when one starts or stops alerting.

The observation is written just after the run ends, in the background: a crash in
between loses that run's observation (the run itself is whole), and `app.drift.observe`
or `keel drift backfill` recomputes it from the stored run."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from keel.drift.facts import RunFacts
from keel.drift.monitors import ALERT, Monitor
from keel.drift.report import MonitorStatus, status
from keel.engine.hooks import Hooks
from keel.store.drift import DriftMonitorSpec, DriftValue
from keel.types import RunStatus

if TYPE_CHECKING:
    from keel.drift.alert import Alerts
    from keel.drift.metrics import DriftMetrics
    from keel.store import Store

log = logging.getLogger("keel.drift")

# A failed run is observed too: a rejected approval often ends the run.
OBSERVED = (RunStatus.SUCCEEDED, RunStatus.FAILED)


class DriftHost(Protocol):
    """What the observer needs of the App: its store and its workflows."""

    @property
    def store(self) -> Store: ...

    registry: Any


def monitors_of(host: DriftHost, workflow: str) -> tuple[Monitor, ...]:
    wf = host.registry.workflows.get(workflow)
    return tuple(getattr(wf, "monitors", ()) or ()) if wf is not None else ()


class DriftObserver(Hooks):
    """The hook: one background task per finished run of a monitored workflow."""

    def __init__(self, host: DriftHost, alerts: Alerts, metrics: DriftMetrics | None = None):
        self.host = host
        self.alerts = alerts
        self.metrics = metrics
        self._registered: set[str] = set()
        self._last: dict[tuple[str, str], str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def run_finished(self, run_id: str, workflow: str, status: RunStatus) -> None:
        monitors = monitors_of(self.host, workflow)
        if not monitors or status not in OBSERVED:
            return
        task = asyncio.get_running_loop().create_task(self.observe(run_id, workflow, monitors))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def observe(
        self, run_id: str, workflow: str, monitors: tuple[Monitor, ...], judge: bool = True
    ) -> tuple[list[DriftValue], int]:
        """Store the run's value for each monitor (idempotent), then judge them: the
        values and how many of them were new."""
        try:
            return await self._observe(run_id, workflow, monitors, judge)
        except Exception:
            log.exception("drift: observing run %s of %s failed", run_id, workflow)
            return [], 0

    async def _observe(
        self, run_id: str, workflow: str, monitors: tuple[Monitor, ...], judge: bool
    ) -> tuple[list[DriftValue], int]:
        store = self.host.store
        if workflow not in self._registered:
            specs = [DriftMonitorSpec(workflow, m.key, m.spec(), time.time()) for m in monitors]
            await store.put_drift_monitors(specs)
            self._registered.add(workflow)
        needs: set[str] = set().union(*(m.needs() for m in monitors))
        facts = await RunFacts.load(store, run_id, needs)
        if facts is None:
            return [], 0
        at = facts.run.ended_at or time.time()
        values = []
        for m in monitors:
            seen = m.observe(facts)
            if seen is None:
                continue
            number, label = (None, seen) if isinstance(seen, str) else (float(seen), None)
            values.append(DriftValue(workflow, m.key, run_id, at, number, label))
        added = await store.add_drift_values(values)
        if self.metrics is not None:
            for v in values:
                self.metrics.observed(v)
        if judge:
            keys = {v.monitor for v in values}
            for m in monitors:
                if m.key in keys:
                    self.judged(await status(store, workflow, m))
        return values, added

    def judged(self, row: MonitorStatus) -> None:
        """Record a judgement; alert when the monitor starts or stops alerting."""
        if self.metrics is not None:
            self.metrics.judged(row.workflow, row.monitor, row.status, row.statistic)
        key = (row.workflow, row.monitor)
        before, self._last[key] = self._last.get(key), row.status
        if (row.status == ALERT) != (before == ALERT):
            event = "drift.alert" if row.status == ALERT else "drift.recovered"
            log.warning(
                "%s: %s/%s %s %.4g (threshold %.4g)",
                event,
                row.workflow,
                row.monitor,
                row.kind,
                row.statistic or 0.0,
                row.threshold,
            )
            self.alerts.send({"event": event, **row.to_json()})

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.alerts.drain()
