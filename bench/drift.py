"""Drift report benchmark: `keel drift report` over 100,000 stored runs.

    python bench/drift.py [--quick] [--trials N] [--runs N] [--json out.json]

One workflow's four monitors (the issue's: a class distribution, a field's confidence,
the approval rate, cost) with 100,000 observed runs each (400,000 values, the shape the
observer stores), on a fresh temp-dir SQLite store. Timed: `app.drift.report()` (every
monitor judged: its recent window and rolling reference read through the store's index,
then its statistic), cold (a fresh App and connection) and warm, per trial; the store is
filled once. Target: under one second. The machine's load average is printed with every
trial. See bench/README.md, "Drift".
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import bench_parser, load_text, log, machine_info, trial_count, write_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keel
from keel.store import DriftMonitorSpec, DriftValue

MONITORS = [
    keel.drift.Distribution("category"),
    keel.drift.Confidence("category"),
    keel.drift.ApprovalRate(),
    keel.drift.Metric("cost_usd"),
]
BATCH = 5000


def _values(n: int) -> list[DriftValue]:
    rng = random.Random(1)
    cats = ["billing", "outage", "account", "other"]
    out = []
    for i in range(n):
        at, run = 1.7e9 + i, f"run-{i}"
        out += [
            DriftValue("triage", MONITORS[0].key, run, at, None, rng.choice(cats)),
            DriftValue("triage", MONITORS[1].key, run, at, rng.gauss(0.9, 0.03)),
            DriftValue("triage", MONITORS[2].key, run, at, float(rng.random() < 0.85)),
            DriftValue("triage", MONITORS[3].key, run, at, rng.lognormvariate(-6, 0.4)),
        ]
    return out


async def _fill(url: str, n: int) -> float:
    app = keel.App(url)
    started = time.perf_counter()
    await app.store.put_drift_monitors(
        [DriftMonitorSpec("triage", m.key, m.spec(), time.time()) for m in MONITORS]
    )
    values = _values(n)
    for i in range(0, len(values), BATCH):
        await app.store.add_drift_values(values[i : i + BATCH])
    took = time.perf_counter() - started
    await app.close()
    return took


async def _report(url: str) -> dict[str, Any]:
    app = keel.App(url)
    started = time.perf_counter()
    rows = await app.drift.report()
    cold = time.perf_counter() - started
    started = time.perf_counter()
    await app.drift.report()
    warm = time.perf_counter() - started
    await app.close()
    assert len(rows) == len(MONITORS) and all(r.window["recent"] == 100 for r in rows)
    return {"cold": cold, "warm": warm, "statuses": {r.monitor: r.status for r in rows}}


async def main() -> None:
    parser = bench_parser(__doc__, "10,000 runs, one trial")
    parser.add_argument("--runs", type=int, default=None, help="observed runs (100,000)")
    args = parser.parse_args()
    n = args.runs or (10_000 if args.quick else 100_000)
    trials = trial_count(args)
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-drift-"))
    url = f"sqlite:///{tmp}/keel.db"
    try:
        log(f"storing {n:,} runs x {len(MONITORS)} monitors ...")
        fill = await _fill(url, n)
        rows = []
        for trial in range(trials):
            got = {"trial": trial + 1, "load_before": load_text(), **await _report(url)}
            got["load_after"] = load_text()
            rows.append(got)
            log(
                f"trial {trial + 1}: cold {got['cold'] * 1000:.0f} ms, warm"
                f" {got['warm'] * 1000:.0f} ms, load {got['load_before']} -> {got['load_after']}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cold = statistics.median(r["cold"] for r in rows)
    warm = statistics.median(r["warm"] for r in rows)
    print(f"\nDrift report: {n:,} runs x {len(MONITORS)} monitors on SQLite, {trials} trial(s)")
    print(f"  machine: {os.cpu_count()} cores, load {load_text()}")
    print(f"  storing the observations  {fill:7.2f} s ({n * len(MONITORS) / fill:,.0f} values/s)")
    verdict = "ok" if cold < 1.0 else "OVER"
    print(f"  report, cold              {cold * 1000:7.0f} ms (target < 1000 ms: {verdict})")
    print(f"  report, warm              {warm * 1000:7.0f} ms")
    if args.json:
        write_report(args.json, {"machine": machine_info(), "runs": n, "trials": rows})


if __name__ == "__main__":
    asyncio.run(main())
