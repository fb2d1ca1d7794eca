"""The proof (issue 17, item 7), seeded: with the default monitors (recent window 100,
rolling reference of the 500 before, minimum sample 30) a shift in a classifier's class
mix, a drop in the approval rate, a decline in a field's confidence and a rise in cost
each raise an alert within a stated number of runs; stable traffic raises none over long
streams (docs/drift.md reports the rates these tests pin).

Statistics are under test here, so observations are judged directly in windows cut as
the store cuts them; `test_windows_cut_here_are_the_stores` proves the two agree."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

import keel
from keel.drift.monitors import Monitor
from keel.drift.report import status
from keel.store import DriftMonitorSpec, DriftValue, Store

SHIFT_AT = 1000
CATS = ["billing", "outage", "account", "other"]
STABLE_MIX = [0.5, 0.2, 0.2, 0.1]
SHIFTED_MIX = [0.3, 0.4, 0.2, 0.1]


def _value(i: int, x: float | str) -> DriftValue:
    if isinstance(x, str):
        return DriftValue("wf", "m", f"r{i}", float(i), None, x, i + 1)
    return DriftValue("wf", "m", f"r{i}", float(i), float(x), None, i + 1)


def _judge_at(m: Monitor, values: list[DriftValue], n: int) -> str:
    """The monitor's status after the first `n` observations (a rolling reference)."""
    size = m.reference.size  # type: ignore[union-attr]
    recent = values[max(0, n - m.window) : n]
    reference = values[max(0, n - m.window - size) : max(0, n - m.window)]
    return m.judge(recent, reference).status


def _runs_to_alert(m: Monitor, values: list[DriftValue]) -> int | None:
    for n in range(SHIFT_AT, len(values) + 1):
        if _judge_at(m, values, n) == "alert":
            return n - SHIFT_AT
    return None


def _alerts(m: Monitor, values: list[DriftValue], every: int = 10) -> tuple[int, int]:
    """(alerting checks, checks) over a stream, judged every `every` runs."""
    checks = range(m.window + m.reference.size, len(values) + 1, every)  # type: ignore[union-attr]
    return sum(_judge_at(m, values, n) == "alert" for n in checks), len(checks)


def _categories(seed: int, n: int, shift: bool = True) -> list[DriftValue]:
    rng = random.Random(seed)
    mix = lambda i: SHIFTED_MIX if shift and i >= SHIFT_AT else STABLE_MIX  # noqa: E731
    return [_value(i, rng.choices(CATS, mix(i))[0]) for i in range(n)]


def _approvals(seed: int, n: int, shift: bool = True) -> list[DriftValue]:
    rng = random.Random(seed)
    rate = lambda i: 0.65 if shift and i >= SHIFT_AT else 0.85  # noqa: E731
    return [_value(i, 1.0 if rng.random() < rate(i) else 0.0) for i in range(n)]


def _confidences(seed: int, n: int, shift: bool = True) -> list[DriftValue]:
    """0.9 ± 0.03; after SHIFT_AT (when shifting) declining 0.1 per 100 runs."""
    rng = random.Random(seed)
    decline = lambda i: 0.001 * max(0, i - SHIFT_AT) if shift else 0.0  # noqa: E731
    return [_value(i, min(1.0, rng.gauss(0.9 - decline(i), 0.03))) for i in range(n)]


def _costs(seed: int, n: int, shift: bool = True) -> list[DriftValue]:
    """Log-normal cost per run; after SHIFT_AT (when shifting) 35% dearer (e.g. a longer prompt)."""
    rng = random.Random(seed)
    return [
        _value(i, rng.lognormvariate(-6 + (0.3 if shift and i >= SHIFT_AT else 0), 0.4))
        for i in range(n)
    ]


Stream = Callable[..., list[DriftValue]]

# (monitor, stream, the most runs after the shift any seed may take to alert)
CASES: dict[str, tuple[Monitor, Stream, int]] = {
    "class mix 50/20/20/10 -> 30/40/20/10": (keel.drift.Distribution("category"), _categories, 100),
    "approval rate 0.85 -> 0.65": (keel.drift.ApprovalRate(), _approvals, 200),
    "confidence declining 0.1 per 100 runs": (keel.drift.Confidence("category"), _confidences, 130),
    "cost up 35%": (keel.drift.Metric("cost_usd"), _costs, 70),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_shift_alerts_within_the_stated_runs(case: str) -> None:
    monitor, stream, bound = CASES[case]
    latencies = [_runs_to_alert(monitor, stream(seed, SHIFT_AT + 300)) for seed in range(5)]
    assert all(n is not None and n <= bound for n in latencies), (case, latencies)
    # before the shift, every check on the same streams was quiet
    for seed in range(5):
        values = stream(seed, SHIFT_AT)
        assert _alerts(monitor, values, every=25)[0] == 0, (case, seed)


@pytest.mark.parametrize("case", list(CASES))
def test_stable_traffic_raises_no_alert_over_long_streams(case: str) -> None:
    monitor, stream, _ = CASES[case]
    alerts = checks = 0
    for seed in (100, 101):
        found, n = _alerts(monitor, stream(seed, 5000, shift=False))
        alerts, checks = alerts + found, checks + n
    assert checks == 882 and alerts == 0, (case, alerts, checks)


def test_too_few_observations_are_insufficient_never_an_alert() -> None:
    values = _categories(1, SHIFT_AT + 300)
    m = keel.drift.Distribution("category")
    assert m.judge(values[-20:], values[:500]).status == "insufficient"
    assert m.judge(values[-100:], values[:29]).status == "insufficient"


async def test_windows_cut_here_are_the_stores(store: Store) -> None:
    monitor = keel.drift.Distribution("category")
    values = _categories(3, SHIFT_AT + 60)
    rows = [DriftValue("wf", monitor.key, v.run_id, v.at, None, v.label) for v in values]
    await store.add_drift_values(rows)
    await store.put_drift_monitors([DriftMonitorSpec("wf", monitor.key, monitor.spec(), 0.0)])
    stored = await status(store, "wf", monitor)
    assert stored.status == _judge_at(monitor, values, len(values))
    assert (stored.window["recent"], stored.window["reference"]) == (100, 500)
    recent, reference = values[-100:], values[-600:-100]
    assert stored.statistic == pytest.approx(monitor.judge(recent, reference).statistic)
