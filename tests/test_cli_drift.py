"""`keel drift report` and `keel drift backfill` read the store alone (monitors' settings
are stored with their values): the table, `--json` with the issue's fields, `--workflow`,
`--check` exiting 100 on an alert, and one-line errors."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

import keel
from keel.cli import cli
from keel.store import DriftMonitorSpec, DriftValue, open_store
from tests.backends import fresh_url


async def _seed(url: str) -> None:
    """triage: a class mix that shifts in its last 100 runs; draft: a steady approval rate."""
    rng = random.Random(5)
    dist = keel.drift.Distribution("category")
    rate = keel.drift.ApprovalRate()
    values = [
        DriftValue(
            "triage",
            dist.key,
            f"t{i}",
            1000.0 + i,
            None,
            rng.choices(["billing", "outage"], [0.8, 0.2] if i < 600 else [0.3, 0.7])[0],
        )
        for i in range(700)
    ]
    values += [DriftValue("draft", rate.key, f"d{i}", 1000.0 + i, 1.0) for i in range(40)]
    store = open_store(url)
    try:
        await store.put_drift_monitors(
            [
                DriftMonitorSpec("triage", dist.key, dist.spec(), 1.0),
                DriftMonitorSpec("draft", rate.key, rate.spec(), 1.0),
            ]
        )
        await store.add_drift_values(values)
    finally:
        await store.close()


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    url = fresh_url(tmp_path)
    monkeypatch.setenv("KEEL_STORE", url)
    monkeypatch.chdir(tmp_path)
    asyncio.run(_seed(url))
    return CliRunner()


def test_report_table_json_and_workflow_filter(seeded: CliRunner) -> None:
    res = seeded.invoke(cli, ["drift", "report"])
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["workflow", "monitor", "status", "statistic"]
    triage = next(line for line in lines if line.startswith("triage"))
    assert "ALERT" in triage and "last 100 vs 500 (the 500 before)" in triage
    draft = next(line for line in lines if line.startswith("draft"))
    assert "insufficient" in draft
    res = seeded.invoke(cli, ["drift", "report", "--workflow", "triage", "--json"])
    [row] = json.loads(res.stdout)
    assert {"workflow", "monitor", "status", "statistic", "threshold", "window"} <= set(row)
    assert (row["workflow"], row["monitor"], row["status"]) == (
        "triage",
        "distribution:category",
        "alert",
    )
    assert row["statistic"] > row["threshold"] == 0.2 and row["window"]["recent"] == 100


def test_check_exits_100_on_an_alert_only(seeded: CliRunner) -> None:
    assert seeded.invoke(cli, ["drift", "report", "--check"]).exit_code == 100
    quiet = seeded.invoke(cli, ["drift", "report", "--check", "--workflow", "draft"])
    assert quiet.exit_code == 0
    none = seeded.invoke(cli, ["drift", "report", "--workflow", "nope"])
    assert none.exit_code == 0 and "no drift monitors have observed runs" in none.stdout


def test_backfill_of_a_workflow_without_monitors_says_what_to_do(seeded: CliRunner) -> None:
    res = seeded.invoke(cli, ["drift", "backfill", "nope"])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: workflow 'nope' has no drift monitors")
    res = seeded.invoke(cli, ["drift", "backfill", "triage", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == {"workflow": "triage", "added": 0}
