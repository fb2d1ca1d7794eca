"""W3 with N worker processes on one Postgres database (Keel only).

    python bench/peers/keel_w3_procs.py --pg URL --workers N [--quick] [--server-pid PID]

The coordinator (this process, started by bench/engine.py) starts N worker
processes (this script with `--worker`). Each builds the bench's App, runs one
warm-up workflow through its own embedded worker (imports, the connection pool,
the code paths), makes `app.worker()` (what `keel worker` serves, with its
default --max-runs) and says "ready". Then the coordinator enqueues the W3
workflows (200 of 5 no-op steps, `execute=False`: only the workers run them),
tells every worker "go" at time t0, and waits until all have succeeded.
Throughput = workflows / (the last run's `ended_at` - t0); the wall clock is
the same for every process on the host.

It also reports how the runs spread over the workers (each counts the tool
calls it made) and how busy the machine was: the CPU time of the worker
processes and of the Postgres server's processes (`--server-pid`, when the
bench started the server), divided by the wall time, in cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import psycopg
from _common import W3_STEPS, Sizes, children_cpu_seconds, cpu_seconds, run_reported
from keel_workloads import TOOL_CALLS, build_app

import keel

READY_TIMEOUT_S = 60.0
DONE_TIMEOUT_S = 90.0  # below the harness's 120 s kill, so a stall says where it stalled
POLL_S = 0.05
# Keel's schema (keel/store/sql/schema.py): how many of the given runs have succeeded.
_DONE = "SELECT count(*) FROM runs WHERE id = ANY(%s) AND status = 'SUCCEEDED'"


# --- a worker process -------------------------------------------------------------


async def _line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def serve(url: str) -> dict[str, Any]:
    """Warm up, say ready, serve from "go" until the next line (or EOF)."""
    app, flows = build_app(url)
    try:
        worker = app.worker()
        # As many runs at once as the worker will hold, so its connection pool has grown
        # to what the timed runs use (psycopg_pool opens connections on demand).
        warm = [await app.start(flows["w3"], {"n": W3_STEPS}) for _ in range(worker.max_runs)]
        await asyncio.gather(*(h.result() for h in warm))
        TOOL_CALLS.clear()
        print("ready", flush=True)
        await _line()
        serving = asyncio.ensure_future(worker.serve())
        await _line()
        await worker.stop()
        await serving
        return {"runs_executed": TOOL_CALLS["noop"] / W3_STEPS}
    finally:
        await app.close()


# --- the coordinator --------------------------------------------------------------


class Workers:
    """N worker processes, in this process group (the harness's kill takes them too)."""

    def __init__(self, url: str, n: int) -> None:
        cmd = [sys.executable, __file__, "--worker", "--pg", url]
        self.procs = [
            subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ
            )
            for _ in range(n)
        ]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()  # blocks: a worker that dies gives EOF
            if line != "ready" or time.monotonic() > deadline:
                raise RuntimeError(f"worker {p.pid} did not get ready (said {line!r})")

    def say(self, line: str) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(line + "\n")
            p.stdin.flush()

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def finish(self) -> list[float]:
        """Stop them; the runs each one executed."""
        self.say("stop")
        executed = []
        for p in self.procs:
            out, _ = p.communicate(timeout=30)
            last = (out.strip().splitlines() or ["{}"])[-1]
            result = json.loads(last) if last.startswith("{") else {}
            if not result.get("ok"):
                raise RuntimeError(f"worker {p.pid} failed: {result.get('error', out[-300:])}")
            executed.append(float(result["runs_executed"]))
        return executed

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


async def coordinate(url: str, n: int, runs: int, server_pid: int | None) -> dict[str, Any]:
    app, flows = build_app(url)
    workers = Workers(url, n)
    try:
        await asyncio.get_running_loop().run_in_executor(None, workers.wait_ready)
        ids = {
            (await app.start(flows["w3"], {"n": W3_STEPS}, execute=False)).id for _ in range(runs)
        }
        cpu0 = workers.cpu()
        pg0 = children_cpu_seconds(server_pid) if server_pid else 0.0
        t0 = time.time()
        workers.say("go")
        ended = await _all_done(app, url, ids)
        wall = max(ended) - t0
        cpu = workers.cpu() - cpu0
        pg = children_cpu_seconds(server_pid) - pg0 if server_pid else None
        executed = workers.finish()
    finally:
        workers.kill()
        await app.close()
    return {
        "workers": n,
        "workflows": runs,
        "seconds": wall,
        "wf_per_s": runs / wall,
        "runs_per_worker": executed,
        "worker_cpu_s": cpu,
        "server_cpu_s": pg,
        # CPU seconds per wall second, read just after the last run (the workers' idle
        # polls until then are in it; the coordinator's own are not).
        "cores_busy": (cpu + (pg or 0.0)) / wall,
    }


async def _all_done(app: keel.App, url: str, ids: set[str]) -> list[float]:
    """The `ended_at` of every run in `ids`, once all have succeeded."""
    # A count per poll, not a listing: listing every finished run 20 times a second
    # would load the server (whose CPU is measured) more as the batch grows.
    deadline = time.monotonic() + DONE_TIMEOUT_S
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(_DONE, (sorted(ids),)).fetchone()
            if row is not None and row[0] == len(ids):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{row} of {len(ids)} runs done after {DONE_TIMEOUT_S:g} s")
            await asyncio.sleep(POLL_S)
    done = await app.list_runs(status=keel.RunStatus.SUCCEEDED, workflow="steps", limit=100_000)
    return [r.ended_at for r in done if r.id in ids and r.ended_at is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description="W3 with N Keel worker processes")
    parser.add_argument("--pg", required=True, help="an empty Postgres database (URL)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help="(internal) be one worker")
    parser.add_argument("--server-pid", type=int, help="the postmaster, for its CPU time")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, help="workflows to enqueue [default: W3's 200]")
    args = parser.parse_args()
    if args.worker:
        run_reported({}, lambda: asyncio.run(serve(args.pg)))
        return
    out: dict[str, Any] = {"system": "keel", "workload": f"w3_procs_{args.workers}"}
    runs = args.runs or Sizes.for_mode(args.quick).w3_workflows
    run_reported(out, lambda: asyncio.run(coordinate(args.pg, args.workers, runs, args.server_pid)))


if __name__ == "__main__":
    main()
