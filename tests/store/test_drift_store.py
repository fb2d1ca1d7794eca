"""DriftStore conformance: observations are stored once per run and monitor, read back
in windows (the newest N by end time, before a given one, within a time range) oldest first,
and monitors' settings are upserted and listed."""

from __future__ import annotations

from keel.store import DriftMonitorSpec, DriftValue, Store


def _values(n: int, monitor: str = "metric:cost_usd", t0: float = 1000.0) -> list[DriftValue]:
    return [DriftValue("triage", monitor, f"r{i}", t0 + i, float(i), None) for i in range(n)]


async def test_values_are_stored_once_per_run_and_monitor(store: Store) -> None:
    assert await store.add_drift_values(_values(5)) == 5
    again = [DriftValue("triage", "metric:cost_usd", "r1", 9999.0, 42.0, None)]
    assert await store.add_drift_values(again) == 0  # a hook that fires twice adds nothing
    assert await store.add_drift_values([]) == 0
    got = await store.drift_values("triage", "metric:cost_usd", 100)
    assert [v.value for v in got] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [v.seq for v in got] == sorted(v.seq for v in got) and got[0].seq > 0


async def test_windows_by_count_sequence_and_time(store: Store) -> None:
    await store.add_drift_values(_values(20))
    labels = [DriftValue("triage", "distribution:category", "r0", 5.0, None, "billing")]
    await store.add_drift_values(labels)
    recent = await store.drift_values("triage", "metric:cost_usd", 5)
    assert [v.run_id for v in recent] == ["r15", "r16", "r17", "r18", "r19"]
    first = (recent[0].at, recent[0].seq)
    before = await store.drift_values("triage", "metric:cost_usd", 3, before=first)
    assert [v.run_id for v in before] == ["r12", "r13", "r14"]
    # a run observed late (a backfill) takes its place by the time it ended
    late = DriftValue("triage", "metric:cost_usd", "late", 1016.5, 99.0, None)
    await store.add_drift_values([late])
    recent = await store.drift_values("triage", "metric:cost_usd", 5)
    assert [v.run_id for v in recent] == ["r16", "late", "r17", "r18", "r19"]
    pinned = await store.drift_values("triage", "metric:cost_usd", 100, start=1002.0, end=1005.0)
    assert [v.run_id for v in pinned] == ["r2", "r3", "r4"]
    [label] = await store.drift_values("triage", "distribution:category", 10)
    assert (label.label, label.value) == ("billing", None)
    assert await store.drift_values("other", "metric:cost_usd", 10) == []


async def test_monitor_settings_are_upserted_and_listed(store: Store) -> None:
    await store.put_drift_monitors(
        [
            DriftMonitorSpec("triage", "metric:cost_usd", {"kind": "metric", "window": 50}, 1.0),
            DriftMonitorSpec("draft", "approval_rate", {"kind": "approval_rate"}, 1.0),
        ]
    )
    await store.put_drift_monitors(
        [DriftMonitorSpec("triage", "metric:cost_usd", {"kind": "metric", "window": 80}, 2.0)]
    )
    got = await store.list_drift_monitors()
    assert [(m.workflow, m.monitor) for m in got] == [
        ("draft", "approval_rate"),
        ("triage", "metric:cost_usd"),
    ]
    [triage] = await store.list_drift_monitors("triage")
    assert (triage.spec["window"], triage.updated_at) == (80, 2.0)
