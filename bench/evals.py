"""Eval harness benchmark: 1,000 cases through a 5-step workflow with the scripted
model, against the same 1,000 runs started and awaited without the harness.

    python bench/evals.py [--quick] [--trials N] [--json out.json]

The workflow: a model call (classify), three tools (lookup, enrich, route) and a
second model call (draft), offline with a ScriptedModel. Per trial, in this process and
alternating which goes first, each on a fresh temp-dir SQLite store with the same
settings and 8 runs at once:

- plain: 1,000 runs started with `app.start` and awaited with `handle.result()`;
- harness: `keel.evals.Suite` over the same 1,000 inputs as cases, scored by three
  scorers (fields, a strict trajectory, a budget) from each run's journal, the results
  stored.

Reported: cases per second through the harness, and the harness's overhead per case
over the plain runs (target: under 10%), in wall time and in this process's CPU time
(every thread). On a shared machine the wall time of one phase swings by half with the
load of others; the CPU time it costs does not, so the overhead verdict is on CPU time.
The machine's load average is printed with every trial. See bench/README.md, "Evals".
"""

from __future__ import annotations

import asyncio
import os
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
from keel import evals

CASES = 1000
CONCURRENCY = 8
LABELS = ("billing", "outage", "bug", "general")


def build(url: str) -> tuple[keel.App, Any]:
    model = keel.llm.ScriptedModel(
        rules=[(label, label) for label in LABELS[:3]], default="general", price_as="gpt-4o-mini"
    )
    app = keel.App(url, llm=model, settings=keel.App(url).settings)

    @app.tool
    async def lookup(account: str) -> dict[str, str]:
        return {"account": account, "tier": "pro"}

    @app.tool
    async def enrich(account: str, category: str) -> dict[str, str]:
        return {"account": account, "category": category}

    @app.tool
    async def route(category: str) -> str:
        return {"outage": "oncall", "billing": "finance"}.get(category, "support")

    @app.workflow
    async def five_steps(ctx: keel.Context, text: str, account: str) -> dict[str, Any]:
        category = await ctx.llm.text(text, name="classify")
        await ctx.call(lookup, account)
        await ctx.call(enrich, account, category)
        queue = await ctx.call(route, category)
        draft = await ctx.llm.text(f"draft a reply about {category}", name="draft")
        return {"category": category, "queue": queue, "draft": draft}

    return app, five_steps


def inputs() -> list[dict[str, Any]]:
    return [
        {
            "id": f"c{i:04d}",
            "input": {"text": f"ticket {i} about {LABELS[i % 4]}", "account": f"a{i % 50}"},
            "expected": {"category": LABELS[i % 4]},
            "tags": [LABELS[i % 4]],
        }
        for i in range(CASES)
    ]


async def timed_phase(fn: Any, cases: list[dict[str, Any]]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one phase."""
    wall, cpu = time.perf_counter(), time.process_time()
    await fn(cases)
    return time.perf_counter() - wall, time.process_time() - cpu


async def plain(cases: list[dict[str, Any]]) -> None:
    folder = tempfile.mkdtemp(prefix="bench-evals-")
    app, wf = build(f"sqlite:///{folder}/plain.db")
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(case: dict[str, Any]) -> None:
        async with gate:
            handle = await app.start(wf, case["input"], id=f"plain.{case['id']}")
            await handle.result(timeout=600)

    try:
        await asyncio.gather(*(one(c) for c in cases))
    finally:
        await app.close()
        shutil.rmtree(folder, ignore_errors=True)


async def harness(cases: list[dict[str, Any]]) -> None:
    folder = tempfile.mkdtemp(prefix="bench-evals-")
    app, wf = build(f"sqlite:///{folder}/unused.db")
    suite = evals.Suite(
        "bench",
        wf,
        cases,
        scorers=[
            evals.fields("category"),
            evals.trajectory(["llm:classify", "lookup", "enrich", "route", "llm:draft"]),
            evals.budget(max_cost_usd=0.01),
        ],
        concurrency=CONCURRENCY,
        app=app,
        timeout=600,
    )
    try:
        report = await suite.run(f"sqlite:///{folder}/eval.db")
        assert len(report.results) == len(cases) and report.means["trajectory"] == 1.0
    finally:
        await app.close()
        shutil.rmtree(folder, ignore_errors=True)


async def main() -> None:
    parser = bench_parser(__doc__, "one trial of 200 cases")
    args = parser.parse_args()
    trials = trial_count(args, full=3)
    cases = inputs()[: 200 if args.quick else CASES]
    await plain(cases[:20])  # warm up: imports, the model gateway, LiteLLM
    rows = []
    for trial in range(trials):
        order = ("plain", "harness") if trial % 2 == 0 else ("harness", "plain")
        got: dict[str, Any] = {"trial": trial + 1, "load_before": load_text()}
        for which in order:
            got[which], got[f"{which}_cpu"] = await timed_phase(
                plain if which == "plain" else harness, cases
            )
        got["load_after"] = load_text()
        rows.append(got)
        log(
            f"trial {trial + 1}: plain {got['plain']:.2f}s ({got['plain_cpu']:.2f}s CPU),"
            f" harness {got['harness']:.2f}s ({got['harness_cpu']:.2f}s CPU),"
            f" load {got['load_before']} -> {got['load_after']}"
        )
    n = len(cases)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"\nEvals: {n} cases x 5 steps, scripted model, {CONCURRENCY} at once, {trials} trial(s)")
    print(f"  machine: {os.cpu_count()} cores, load {load_text()}")
    print(
        f"  plain runs      {med('plain'):7.2f} s wall {med('plain_cpu'):7.2f} s CPU"
        f"  {n / med('plain'):7.1f} runs/s"
    )
    print(
        f"  through harness {med('harness'):7.2f} s wall {med('harness_cpu'):7.2f} s CPU"
        f"  {n / med('harness'):7.1f} cases/s"
    )
    for label, a, b in (("wall", "plain", "harness"), ("CPU", "plain_cpu", "harness_cpu")):
        extra = med(b) - med(a)
        print(
            f"  overhead ({label:<4})  {extra / n * 1000:7.2f} ms per case"
            f" ({(med(b) / med(a) - 1) * 100:+.1f}%; target < 10%)"
        )
    if args.json:
        write_report(args.json, {"machine": machine_info(), "cases": n, "trials": rows})


if __name__ == "__main__":
    asyncio.run(main())
