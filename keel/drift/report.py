"""Judging a stored monitor: read its recent and reference windows from the store and
compare them (`keel drift report`, the console, alerts); and its history in buckets
for plots."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from keel.drift.monitors import Monitor, Pinned, from_spec
from keel.store.drift import DriftValue

if TYPE_CHECKING:
    from keel.store import Store


@dataclass(frozen=True)
class MonitorStatus:
    """One monitor's state now: `status` ok, alert or insufficient; `statistic` against
    `threshold` (and the test's `p_value` against `alpha`); `window` says which
    observations were compared.

    Example:
        for row in await app.drift.report(workflow="triage"):
            print(row.monitor, row.status, row.statistic)
    """

    workflow: str
    monitor: str
    kind: str
    status: str
    statistic: float | None
    threshold: float
    p_value: float | None
    alpha: float
    window: dict[str, Any]
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def windows(
    store: Store, workflow: str, monitor: Monitor
) -> tuple[list[DriftValue], list[DriftValue]]:
    """The monitor's recent window and its reference window, each oldest first."""
    recent = await store.drift_values(workflow, monitor.key, monitor.window)
    ref = monitor.reference
    if isinstance(ref, Pinned):
        reference = await store.drift_values(
            workflow, monitor.key, ref.limit, start=ref.start, end=ref.end
        )
        # a pinned range that reaches into the recent window compares nothing with itself
        reference = [v for v in reference if not recent or _before(v, recent[0])]
    elif recent:
        oldest = (recent[0].at, recent[0].seq)
        reference = await store.drift_values(workflow, monitor.key, ref.size, before=oldest)
    else:
        reference = []
    return recent, reference


async def status(store: Store, workflow: str, monitor: Monitor) -> MonitorStatus:
    """Judge one monitor from what the store holds now."""
    recent, reference = await windows(store, workflow, monitor)
    verdict = monitor.judge(recent, reference)
    window = {
        "recent": len(recent),
        "recent_size": monitor.window,
        "reference": len(reference),
        "reference_kind": monitor.reference.describe(),
        "recent_from": recent[0].at if recent else None,
        "recent_to": recent[-1].at if recent else None,
        "reference_from": reference[0].at if reference else None,
        "reference_to": reference[-1].at if reference else None,
    }
    return MonitorStatus(
        workflow,
        monitor.key,
        monitor.kind,
        verdict.status,
        _finite(verdict.statistic),
        verdict.threshold,
        _finite(verdict.p_value),
        monitor.significance,
        window,
        verdict.detail,
    )


async def report(store: Store, workflow: str | None = None) -> list[MonitorStatus]:
    """Every stored monitor's status (only `workflow`'s when given), by workflow and name."""
    specs = await store.list_drift_monitors(workflow)
    return [await status(store, s.workflow, from_spec(s.spec)) for s in specs]


@dataclass(frozen=True)
class Series:
    """A monitor's history in buckets of consecutive observations, for a plot: per bucket
    its time and value (numbers: the mean; categories: each category's share), and the
    reference band (numbers: mean ± 2 sd of the reference window; categories: the
    reference shares)."""

    monitor: Monitor
    points: list[tuple[float, dict[str, float]]]
    band: dict[str, tuple[float, float]]
    recent_from: float | None


async def series(
    store: Store, workflow: str, monitor: Monitor, limit: int = 2000, buckets: int = 40
) -> Series:
    values = await store.drift_values(workflow, monitor.key, limit)
    recent, reference = await windows(store, workflow, monitor)
    size = max(1, math.ceil(len(values) / buckets))
    points = [
        (chunk[-1].at, _summary(chunk))
        for chunk in (values[i : i + size] for i in range(0, len(values), size))
    ]
    band: dict[str, tuple[float, float]] = {}
    ref_summary = _summary(reference) if reference else {}
    if reference and reference[0].label is None:
        nums = [v.value for v in reference if v.value is not None]
        mean = sum(nums) / len(nums) if nums else 0.0
        sd = math.sqrt(sum((x - mean) ** 2 for x in nums) / max(1, len(nums) - 1))
        # the band a bucket's mean stays in: the reference's spread over sqrt(bucket size)
        half = 2 * sd / math.sqrt(size)
        band = {"value": (mean - half, mean + half)}
    else:
        band = {k: (v, v) for k, v in ref_summary.items()}
    return Series(monitor, points, band, recent[0].at if recent else None)


def _summary(chunk: list[DriftValue]) -> dict[str, float]:
    labels = [v.label for v in chunk if v.label is not None]
    if labels:
        counts = Counter(labels)
        return {k: n / len(labels) for k, n in counts.items()}
    nums = [v.value for v in chunk if v.value is not None]
    return {"value": sum(nums) / len(nums)} if nums else {}


def _before(a: DriftValue, b: DriftValue) -> bool:
    return (a.at, a.seq) < (b.at, b.seq)


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None
