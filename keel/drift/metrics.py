"""OpenTelemetry metrics of drift monitoring: every monitored value as it is observed,
and each monitor's statistic when it is judged. Instruments come from the global
MeterProvider: a no-op unless the application installs one (keel.observe.metrics)."""

from __future__ import annotations

from typing import Any

from keel.store.drift import DriftValue

_STATUS = {"ok": 0, "alert": 1, "insufficient": -1}


class DriftMetrics:
    """`keel.drift.value` (histogram of numeric values), `keel.drift.observations`
    (counter; a category's label as `keel.drift.label`), `keel.drift.statistic` and
    `keel.drift.status` (gauges: 0 ok, 1 alert, -1 insufficient), each by
    `gen_ai.workflow.name` and `keel.drift.monitor`."""

    def __init__(self, meter: Any = None) -> None:
        if meter is None:
            from opentelemetry import metrics

            meter = metrics.get_meter("keel")
        self.value = meter.create_histogram(
            "keel.drift.value", description="Monitored values per run, by workflow and monitor"
        )
        self.observations = meter.create_counter(
            "keel.drift.observations", description="Runs observed by a drift monitor"
        )
        self.statistic = meter.create_gauge(
            "keel.drift.statistic", description="A drift monitor's statistic when last judged"
        )
        self.status = meter.create_gauge(
            "keel.drift.status", description="A monitor's status: 0 ok, 1 alert, -1 insufficient"
        )

    def observed(self, v: DriftValue) -> None:
        attrs: dict[str, Any] = {
            "gen_ai.workflow.name": v.workflow,
            "keel.drift.monitor": v.monitor,
        }
        if v.value is not None:
            self.value.record(v.value, attrs)
        if v.label is not None:
            attrs["keel.drift.label"] = v.label
        self.observations.add(1, attrs)

    def judged(self, workflow: str, monitor: str, status: str, statistic: float | None) -> None:
        attrs = {"gen_ai.workflow.name": workflow, "keel.drift.monitor": monitor}
        self.status.set(_STATUS.get(status, -1), attrs)
        if statistic is not None:
            self.statistic.set(statistic, attrs)
