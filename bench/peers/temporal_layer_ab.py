"""Keel's layer on Temporal, A/B in one process: W1's 20-step workflow on Keel's backend
and written with raw temporalio, measured in alternating rounds against the same server,
so the shared machine's load falls on both alike (the per-process table cells, taken
minutes apart, swing more than the 10% being measured). Runs in the repo's venv.

    python bench/peers/temporal_layer_ab.py --dir TMPDIR [--quick]

(KEEL_BENCH_TEMPORAL names the server; bench/engine.py's Temporal section runs it.)
Prints one JSON line: per pair (activities, local activities), the median ms per step of
each side over the rounds (wall time, and this process's CPU time: all workers live
here, the idle ones cost little), and their ratios.

Sandboxed (the default), a third side runs the raw workflows on Keel's sandbox runner
(keel/backends/temporal/runner.py: serialization contexts read without entering the
sandbox): Keel against it is the layer alone; against the first, what a user moving
from raw temporalio to Keel sees.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from _common import W1_STEPS, run_reported
from _temporal import sandboxed
from keel_temporal_workloads import KeelTemporalAdapter
from temporal_workloads import TemporalAdapter


async def _ms_per_step(adapter: Any, runs: int) -> tuple[float, float]:
    """(wall, CPU) milliseconds per step over `runs` W1 runs."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(runs):
        await adapter.w1()
    steps = runs * W1_STEPS
    return (time.perf_counter() - t0) * 1000 / steps, (time.process_time() - cpu0) * 1000 / steps


async def pair(workdir: Path, local: bool, rounds: int, runs: int) -> dict[str, Any]:
    """Alternate Keel and raw rounds (the order turning each round); medians and ratio."""
    sides = {"keel": KeelTemporalAdapter(local=local), "raw": TemporalAdapter(local=local)}
    if sandboxed():
        from temporalio.worker.workflow_sandbox import SandboxRestrictions

        from keel.backends.temporal.runner import keel_sandbox_runner

        runner = keel_sandbox_runner(SandboxRestrictions.default)
        sides["raw_on_keel_runner"] = TemporalAdapter(local=local, runner=runner)
    for name, adapter in sides.items():
        (workdir / name).mkdir(exist_ok=True)
        await adapter.open(workdir / name)
    try:
        for adapter in sides.values():
            await adapter.w1()  # warm up
        wall: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        names = list(sides)
        for r in range(rounds):
            turn = r % len(names)  # each side goes first in turn
            order = [*names[turn:], *names[:turn]]
            for name in order:
                ms, cpu_ms = await _ms_per_step(sides[name], runs)
                wall[name].append(ms)
                cpu[name].append(cpu_ms)
    finally:
        for adapter in sides.values():
            await adapter.close()
    keel, raw = statistics.median(wall["keel"]), statistics.median(wall["raw"])
    keel_cpu, raw_cpu = statistics.median(cpu["keel"]), statistics.median(cpu["raw"])
    out = {
        "keel_ms_per_step": keel,
        "raw_ms_per_step": raw,
        "ratio": keel / raw,
        "keel_cpu_ms_per_step": keel_cpu,
        "raw_cpu_ms_per_step": raw_cpu,
        "cpu_ratio": keel_cpu / raw_cpu,
        "wall": wall,
        "cpu": cpu,
    }
    if "raw_on_keel_runner" in sides:
        same = statistics.median(wall["raw_on_keel_runner"])
        same_cpu = statistics.median(cpu["raw_on_keel_runner"])
        out |= {
            "same_runner_ms_per_step": same,
            "same_runner_cpu_ms_per_step": same_cpu,
            "layer_ratio": keel / same,
            "layer_cpu_ratio": keel_cpu / same_cpu,
        }
    return out


async def measure(workdir: Path, quick: bool) -> dict[str, Any]:
    # a round of activities is ~3 s per side here, of local activities ~1 s: more of the
    # latter, all three sides inside the harness's 120 s per process on a loaded machine
    return {
        "activities": await pair(workdir, False, 4 if quick else 5, runs=3) | {"steps": 60},
        "local": await pair(workdir, True, 6 if quick else 9, runs=10) | {"steps": 200},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="an empty temp dir")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    out = {"system": "keel-temporal/temporal"}
    run_reported(out, lambda: asyncio.run(measure(args.dir, args.quick)))


if __name__ == "__main__":
    main()
