"""`app.drift`: drift monitoring of an App's workflows (docs/drift.md): the report, the
history behind a plot, alert targets, and re-observing runs whose observation a crash
lost."""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.drift.alert import Alerts, AlertTarget
from keel.drift.monitors import Monitor, from_spec
from keel.drift.observer import DriftHost, DriftObserver, monitors_of
from keel.drift.report import MonitorStatus, Series, report, series
from keel.errors import ConfigError, InputError, RunNotFound

if TYPE_CHECKING:
    from keel.store.drift import DriftValue


class Drift:
    """Drift monitors of an App: `report`, `series`, `on_alert`, `observe`, `backfill`.

    Example:
        app.drift.on_alert("https://hooks.example.com/drift")
        for row in await app.drift.report():
            print(row.workflow, row.monitor, row.status)
    """

    def __init__(self, host: DriftHost) -> None:
        self.host = host
        self.alerts = Alerts()
        self.observer = DriftObserver(host, self.alerts)

    def on_alert(self, target: AlertTarget) -> None:
        """Tell `target` (a callable, sync or async, or a webhook URL) when a monitor starts
        (`drift.alert`) or stops (`drift.recovered`) alerting. Never blocks a run."""
        self.alerts.add(target)

    async def report(self, workflow: str | None = None) -> list[MonitorStatus]:
        """Every monitor's status now, judged from the store (only `workflow`'s if given)."""
        return await report(self.host.store, workflow)

    async def series(self, workflow: str, monitor: str, limit: int = 2000) -> Series:
        """A monitor's last `limit` observations in buckets, with its reference band."""
        found = await self._monitor(workflow, monitor)
        return await series(self.host.store, workflow, found, limit)

    async def observe(self, run_id: str) -> list[DriftValue]:
        """Observe one finished run now (again): what its monitors store for it. Stored
        observations are kept, never duplicated, so this is safe to repeat."""
        run = await self.host.store.get_run(run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id!r} in this store: check the id (keel runs list)")
        monitors = await self._monitors(run.workflow)
        values, _ = await self.observer.observe(run_id, run.workflow, monitors, judge=False)
        return values

    async def backfill(self, workflow: str, limit: int = 10_000) -> int:
        """Observe the workflow's last `limit` ended runs that lack an observation (after a
        crash between a run's end and its observation, or for monitors added later).
        Returns how many values were added."""
        from keel.drift.observer import OBSERVED
        from keel.store import RunFilter

        monitors = await self._monitors(workflow)
        added = 0
        for status in OBSERVED:
            runs = await self.host.store.list_runs(
                RunFilter(workflow=workflow, status=status, limit=limit)
            )
            for run in runs:
                _, new = await self.observer.observe(run.id, workflow, monitors, judge=False)
                added += new
        return added

    async def _monitors(self, workflow: str) -> tuple[Monitor, ...]:
        declared = monitors_of(self.host, workflow)
        if declared:
            return declared
        stored = await self.host.store.list_drift_monitors(workflow)
        if not stored:
            raise ConfigError(
                f"workflow {workflow!r} has no drift monitors here or in the store: declare"
                " them with @app.workflow(monitors=[...]) (docs/drift.md)"
            )
        return tuple(from_spec(s.spec) for s in stored)

    async def _monitor(self, workflow: str, name: str) -> Monitor:
        for m in await self._monitors(workflow):
            if m.key == name:
                return m
        raise InputError(
            f"workflow {workflow!r} has no drift monitor {name!r}: see keel drift report"
        )
