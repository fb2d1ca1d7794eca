"""Approvals benchmark: from a person's decision to the run resuming, with 1,000 runs waiting.

    python bench/hitl.py [--quick] [--only inproc,xproc,xproc_fast] [--json out.json]

Every run of the `gated` workflow calls one tool declared
`@app.tool(irreversible=True, approval=Approval(queue="bench"))`, so each run
opens an approval request and suspends durably (WAITING) until it is decided.
Per mode, in a fresh process with a fresh temp-dir SQLite store:

1. one warm-up run through the whole cycle, then 1,000 runs started and
   parked; worker RSS per waiting run = (RSS with 1,000 waiting - RSS before)
   / 1,000, both after gc.collect() (as W4 in bench/engine.py);
2. burst: all 1,000 requests listed with `app.approvals.list` and approved
   back to back with `app.approvals.approve`;
3. one at a time: 1,000 + K runs parked again, then K of them approved one by
   one, each after the previous run finished plus a random pause of up to one
   poll interval (so decisions land at random points of the worker's polling).

For every approved run: decision time = the `decided_at` the store keeps with
the decision; tool started = the journal's `started_at` of the tool step
(`app.steps`); run finished = the run's `ended_at`. Median and p99 of each.

Modes: `inproc` decides through the same App whose embedded worker runs the
runs (a decision wakes that worker at once); `xproc` / `xproc_fast` decide
from this process while a `keel worker` subprocess runs the runs, polling the
store every Settings.poll_interval (default 0.1 s) / every 0.01 s.
See bench/README.md, "Approvals".
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

# Stdlib only: the `keel worker` subprocess that loads this file imports it too.
from _harness import (
    BENCH,
    bench_parser,
    choose,
    communicate_json,
    keel_env,
    keel_python,
    machine_info,
    ok_value,
    print_tables,
    rows_by_column,
    run_reported,
    timed,
    with_trials,
    write_report,
)

QUEUE = "bench"
WAITING_RUNS = 1000
ONE_AT_A_TIME = 200  # decisions in phase 3 (50 with --quick)
ONE_AT_A_TIME_QUICK = 50
IDLE_S = 2.0  # how long the worker's CPU is sampled while 1,000 runs wait
PHASE_TIMEOUT_S = 60.0  # any single wait; fails with a diagnosis before the harness's kill
SEED = 6  # the pauses between one-at-a-time decisions
WORKER_ENV = "KEEL_BENCH_HITL_WORKER"  # set for the `keel worker` subprocess: its RSS file
DEFAULT_POLL_S = 0.1  # keel.engine.runtime.Settings.poll_interval; checked in the child


@dataclass(frozen=True)
class Mode:
    name: str
    label: str
    cross_process: bool
    poll_interval: float | None = None  # None: Keel's default (Settings.poll_interval)


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("inproc", "in-process", cross_process=False),
        Mode("xproc", "cross-proc, poll 0.1 s", cross_process=True),
        Mode("xproc_fast", "cross-proc, poll 0.01 s", cross_process=True, poll_interval=0.01),
    )
}


# --- the app (the bench child and the `keel worker` subprocess both build it) ----


def build(store: str | None = None) -> Any:
    """The gated workflow; `store=None` takes KEEL_STORE (the `keel worker` side)."""
    import keel
    from keel.hitl import Approval

    app = keel.App(store)

    @app.tool(irreversible=True, approval=Approval(queue=QUEUE, reason="bench"))
    async def act(n: int) -> float:
        return time.time()  # when the approved tool actually ran, cross-checks the journal

    @app.workflow
    async def gated(ctx: keel.Context, n: int) -> float:
        stamp: float = await ctx.call(act, n)
        return stamp

    return app


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"VmRSS not found for {pid}")


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process, from /proc (works for this process and the worker)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _report_rss(signum: int, frame: Any) -> None:
    """SIGUSR1 in the worker subprocess: collect, then append the settled RSS to the file."""
    gc.collect()
    with open(os.environ[WORKER_ENV], "a") as f:
        f.write(f"{rss_kb()}\n")


if __name__ != "__main__" and os.environ.get(WORKER_ENV):
    # Loaded by `python -m keel worker bench/hitl.py`, which looks for a keel.App here.
    signal.signal(signal.SIGUSR1, _report_rss)
    app = build()


# --- one mode, inside a fresh Keel process ------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: p99 of 200 values is the 198th (the 3rd largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary_ms(prefix: str, values: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        f"{prefix}_min_ms": min(ms),
        f"{prefix}_median_ms": statistics.median(ms),
        f"{prefix}_p99_ms": pct(ms, 99),
        f"{prefix}_max_ms": max(ms),
    }


async def until(
    check: Callable[[], Awaitable[bool]], what: str, diagnose: Callable[[], Awaitable[str]]
) -> None:
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {PHASE_TIMEOUT_S:g} s ({await diagnose()})")
        await asyncio.sleep(0.02)


class Bench:
    """Starts, parks, decides and awaits runs, in-process or against a worker subprocess."""

    def __init__(self, mode: Mode, workdir: Path, quick: bool) -> None:
        self.mode = mode
        self.workdir = workdir
        self.quick = quick
        self.app = build(f"sqlite:///{workdir / 'keel.db'}")
        self.worker: subprocess.Popen[bytes] | None = None
        self.rss_file = workdir / "worker-rss.txt"
        self.rng = random.Random(SEED)
        if mode.poll_interval is not None:
            self.app.settings.poll_interval = mode.poll_interval
        self.poll_interval: float = self.app.settings.poll_interval

    # -- processes --------------------------------------------------------------------

    async def open(self) -> None:
        if not self.mode.cross_process:
            return
        env = dict(os.environ)
        env.update(
            KEEL_STORE=self.app.store_url,
            KEEL_POLL_INTERVAL=str(self.poll_interval),
            **{WORKER_ENV: str(self.rss_file)},
        )
        # Same process group as this child, so the harness's kill on timeout takes it too.
        with open(self.workdir / "worker.stderr", "wb") as err:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "keel", "worker", str(BENCH / "hitl.py")],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    async def close(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        await self.app.close()

    def _worker_alive(self) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            tail = (self.workdir / "worker.stderr").read_text().strip().splitlines()[-5:]
            raise RuntimeError(f"keel worker exited {self.worker.returncode}: {' | '.join(tail)}")

    async def settled_rss_kb(self) -> int:
        """RSS of the process that executes the runs, after a full collection."""
        if self.worker is None:
            gc.collect()
            return rss_kb()
        lines = self.rss_file.read_text().split() if self.rss_file.exists() else []
        self.worker.send_signal(signal.SIGUSR1)

        async def reported() -> bool:
            self._worker_alive()
            return self.rss_file.exists() and len(self.rss_file.read_text().split()) > len(lines)

        await until(reported, "worker RSS report", self._counts)
        return int(self.rss_file.read_text().split()[-1])

    def worker_cpu_s(self) -> float:
        return cpu_seconds(self.worker.pid if self.worker is not None else "self")

    # -- runs -------------------------------------------------------------------------

    async def _counts(self) -> str:
        runs = await self.app.list_runs(workflow="gated", limit=100_000)
        counts = Counter(r.status.value for r in runs)
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no runs"

    async def _count(self, status: Any) -> int:
        return len(await self.app.list_runs(status=status, workflow="gated", limit=100_000))

    async def start(self, n: int, first: int) -> list[str]:
        execute = not self.mode.cross_process  # cross-process: only the worker runs them
        ids = []
        for i in range(first, first + n):
            handle = await self.app.start("gated", {"n": i}, execute=execute)
            ids.append(handle.id)
        return ids

    async def park(self, n: int, first: int) -> tuple[list[str], float]:
        """Start n runs; return their ids once all of them are WAITING, and how long it took.

        Polled as W4 does (`get_run` on the runs not parked yet), so the check itself
        leaves no batch of 1,000 run objects behind in the measured process.
        """
        from keel import RunStatus

        t0 = time.perf_counter()
        ids = await self.start(n, first)
        left = list(ids)

        async def parked() -> bool:
            self._worker_alive()
            statuses = [(await self.app.get_run(i)).status for i in left]
            if any(s.terminal for s in statuses):
                raise AssertionError("a run finished before its approval was decided")
            left[:] = [i for i, s in zip(left, statuses, strict=True) if s != RunStatus.WAITING]
            return not left

        await until(parked, f"{n} runs WAITING for approval", self._counts)
        return ids, time.perf_counter() - t0

    async def pending(self, ids: Sequence[str]) -> list[Any]:
        """The pending approval requests of these runs, as a reviewer lists them."""
        reqs = await self.app.approvals.list(queue=QUEUE, kind="approval", limit=100_000)
        mine = set(ids)
        reqs = [r for r in reqs if r.run_id in mine]
        if len(reqs) != len(ids) or any(r.tool != "act" for r in reqs):
            raise AssertionError(f"expected {len(ids)} pending requests for act, got {len(reqs)}")
        return reqs

    async def finished(self, run_id: str) -> None:
        if self.worker is None:
            await self.app.handle(run_id).result(timeout=PHASE_TIMEOUT_S)
            return
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while not (await self.app.get_run(run_id)).status.terminal:
            self._worker_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} not finished after {PHASE_TIMEOUT_S:g} s")
            await asyncio.sleep(0.002)

    async def all_finished(self, ids: Sequence[str]) -> None:
        if self.worker is None:
            await asyncio.gather(*(self.finished(i) for i in ids))
            return
        from keel import RunStatus

        async def done() -> bool:
            self._worker_alive()
            runs = await self.app.list_runs(RunStatus.SUCCEEDED, "gated", limit=100_000)
            return {r.id for r in runs} >= set(ids)

        await until(done, f"{len(ids)} approved runs finished", self._counts)

    async def approve(self, req: Any) -> tuple[str, float, float]:
        """(run id, decided_at as stored, seconds the approve() call took)."""
        t0 = time.perf_counter()
        decided = await self.app.approvals.approve(req.id, by="bench")
        return req.run_id, float(decided.decided_at), time.perf_counter() - t0

    async def latencies(self, decided: dict[str, float]) -> dict[str, list[float]]:
        """Per approved run: decision -> decision taken by the run, tool started, run ended."""
        from keel import RunStatus
        from keel.types import StepKind

        out: dict[str, list[float]] = {"taken": [], "tool": [], "finished": []}
        for run_id, at in decided.items():
            info = await self.app.get_run(run_id)
            if info.status is not RunStatus.SUCCEEDED or info.ended_at is None:
                raise AssertionError(f"run {run_id} ended {info.status.value}, not SUCCEEDED")
            steps = await self.app.steps(run_id)
            tool = [s for s in steps if s.kind is StepKind.TOOL and s.name == "act"]
            taken = [s for s in steps if s.key.endswith("/decision#0") and s.ended_at]
            if len(tool) != 1 or len(taken) != 1:
                raise AssertionError(f"run {run_id}: unexpected journal {[s.key for s in steps]}")
            if not tool[0].started_at <= float(info.result) <= info.ended_at:
                raise AssertionError(f"run {run_id}: the tool ran outside its journaled step")
            taken_at = taken[0].ended_at
            assert taken_at is not None
            out["taken"].append(taken_at - at)
            out["tool"].append(tool[0].started_at - at)
            out["finished"].append(info.ended_at - at)
        if min(out["tool"]) < 0:
            raise AssertionError("a tool step started before its run's decision was stored")
        return out

    # -- the phases -------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        from keel.engine.runtime import Settings

        if Settings().poll_interval != DEFAULT_POLL_S:
            raise AssertionError(f"Keel's default poll interval is no longer {DEFAULT_POLL_S} s")
        out: dict[str, Any] = {
            "mode": self.mode.name,
            "cross_process": self.mode.cross_process,
            "poll_interval_s": self.poll_interval,
            "waiting_runs": WAITING_RUNS,
        }
        await self.open()

        # Warm-up: one whole cycle, so lazily built machinery is not billed to the runs.
        warm, _ = await self.park(1, -1)
        for req in await self.pending(warm):
            await self.approve(req)
        await self.all_finished(warm)

        # 1,000 runs waiting: memory, and what the idle worker costs.
        rss0 = await self.settled_rss_kb()
        ids, out["park_s"] = await self.park(WAITING_RUNS, 0)
        rss1 = await self.settled_rss_kb()
        out |= {
            "rss_before_kb": rss0,
            "rss_waiting_kb": rss1,
            "kb_per_waiting_run": (rss1 - rss0) / WAITING_RUNS,
        }
        cpu0, t0 = self.worker_cpu_s(), time.perf_counter()
        await asyncio.sleep(IDLE_S)
        out["idle_cpu_pct"] = 100 * (self.worker_cpu_s() - cpu0) / (time.perf_counter() - t0)

        # Burst: every request approved back to back.
        reqs = await self.pending(ids)
        decided: dict[str, float] = {}
        calls: list[float] = []
        t_first = time.time()
        for req in reqs:
            run_id, at, took = await self.approve(req)
            decided[run_id] = at
            calls.append(took)
        out["burst_decide_all_s"] = time.time() - t_first
        await self.all_finished(ids)
        lat = await self.latencies(decided)
        ends = [(await self.app.get_run(i)).ended_at or 0.0 for i in ids]
        out["burst_all_finished_s"] = max(ends) - t_first
        out["burst_approve_call_median_ms"] = statistics.median(calls) * 1000
        for key, values in lat.items():
            out |= summary_ms(f"burst_{key}", values)

        # One at a time, with at least 1,000 others still waiting at every decision.
        k = ONE_AT_A_TIME_QUICK if self.quick else ONE_AT_A_TIME
        rss2 = await self.settled_rss_kb()
        ids2, out["park2_s"] = await self.park(WAITING_RUNS + k, WAITING_RUNS)
        # The same measure again, now that the first batch has warmed the worker's caches.
        out["kb_per_waiting_run_again"] = (await self.settled_rss_kb() - rss2) / len(ids2)
        reqs2 = (await self.pending(ids2))[:k]
        decided2: dict[str, float] = {}
        calls2: list[float] = []
        for req in reqs2:
            await asyncio.sleep(self.rng.uniform(0, self.poll_interval))
            run_id, at, took = await self.approve(req)
            decided2[run_id] = at
            calls2.append(took)
            await self.finished(run_id)
        lat2 = await self.latencies(decided2)
        out["one_decisions"] = k
        out["one_approve_call_median_ms"] = statistics.median(calls2) * 1000
        for key, values in lat2.items():
            out |= summary_ms(f"one_{key}", values)
        self._worker_alive()
        return out


def child_main(args: argparse.Namespace) -> int:
    """Child-process entry: one mode, one JSON line on stdout; never raises."""
    out: dict[str, Any] = {"mode": args.child}

    async def go() -> dict[str, Any]:
        bench = Bench(MODES[args.child], args.dir, args.quick)
        try:
            return await bench.run()
        finally:
            await bench.close()

    run_reported(out, lambda: asyncio.run(go()))
    return 0


# --- the harness ------------------------------------------------------------------


def run_child(mode: Mode, quick: bool) -> dict[str, Any]:
    """One mode in a fresh process and fresh temp dir; never raises."""
    with tempfile.TemporaryDirectory(prefix=f"keel-bench-hitl-{mode.name}-") as tmp:
        cmd = [str(keel_python()), str(Path(__file__).resolve()), "--child", mode.name]
        cmd += ["--dir", tmp, *(["--quick"] if quick else [])]
        # cwd: no stray keel.toml from the caller's directory. The child runs in its
        # own session, so a timeout kills the child and its worker together.
        result, stderr = communicate_json(cmd, keel_env(), cwd=tmp)
        with_worker = Path(tmp) / "worker.stderr"
        worker_log = with_worker.read_text() if with_worker.exists() else ""
    if not result.get("ok") and stderr is not None:  # a timeout is reported in its cell
        sys.stderr.write(stderr + worker_log)
    return result


_get = ok_value


def _ms(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: f"{_get(r, key):.1f}"


ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("worker poll interval (s)", lambda r: f"{_get(r, 'poll_interval_s'):g}"),
    ("worker RSS per waiting run (KB)", lambda r: f"{_get(r, 'kb_per_waiting_run'):.1f}"),
    (
        "  again, 1,000 + K after the burst (KB)",
        lambda r: f"{_get(r, 'kb_per_waiting_run_again'):.1f}",
    ),
    ("worker CPU, idle, 1,000 waiting (%)", lambda r: f"{_get(r, 'idle_cpu_pct'):.1f}"),
    ("time to park 1,000 runs (s)", lambda r: f"{_get(r, 'park_s'):.2f}"),
    ("burst: approve() call, median (ms)", _ms("burst_approve_call_median_ms")),
    ("burst: 1,000 approvals stored in (s)", lambda r: f"{_get(r, 'burst_decide_all_s'):.2f}"),
    ("burst: all 1,000 finished in (s)", lambda r: f"{_get(r, 'burst_all_finished_s'):.2f}"),
    ("burst: -> tool started, median (ms)", _ms("burst_tool_median_ms")),
    ("burst: -> tool started, p99 (ms)", _ms("burst_tool_p99_ms")),
    ("burst: -> run finished, median (ms)", _ms("burst_finished_median_ms")),
    ("burst: -> run finished, p99 (ms)", _ms("burst_finished_p99_ms")),
    ("one by one: decisions (K)", lambda r: f"{_get(r, 'one_decisions'):,.0f}"),
    ("one by one: approve() call, median (ms)", _ms("one_approve_call_median_ms")),
    ("one by one: -> tool started, median (ms)", _ms("one_tool_median_ms")),
    ("one by one: -> tool started, p99 (ms)", _ms("one_tool_p99_ms")),
    ("one by one: -> run finished, median (ms)", _ms("one_finished_median_ms")),
    ("one by one: -> run finished, p99 (ms)", _ms("one_finished_p99_ms")),
)


def table_rows(modes: Sequence[Mode], results: dict[str, dict[str, Any]]) -> list[list[str]]:
    return rows_by_column(ROWS, [(results[m.name],) for m in modes])


def print_table(modes: Sequence[Mode], results: dict[str, dict[str, Any]], trials: int) -> None:
    header = ["metric", *(m.label for m in modes)]
    what = "median of trials" if trials > 1 else "1 trial"
    title = f"Keel approvals: {WAITING_RUNS:,} runs waiting ({what})"
    print_tables([(title, header, table_rows(modes, results))])


def bench(modes: Sequence[Mode], trials: int, quick: bool) -> dict[str, dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {m.name: [] for m in modes}
    for t in range(trials):
        for m in modes:
            what = f"hitl {m.name} trial {t + 1}/{trials}"
            runs[m.name].append(timed(what, partial(run_child, m, quick)))
    return {name: with_trials(ts) for name, ts in runs.items()}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(
        __doc__,
        f"{ONE_AT_A_TIME_QUICK} one-at-a-time decisions",
        trials_help="trials per mode (default 1)",
        trials_default=1,
    )
    parser.add_argument("--only", default=",".join(MODES), help="comma list of modes")
    # Internal: the harness re-runs this file as a child for each mode.
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.only = choose(parser, "only", args.only, list(MODES))
    if args.child and args.dir is None:
        parser.error("--child needs --dir")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    modes = [MODES[name] for name in args.only]
    results = bench(modes, args.trials, args.quick)
    print_table(modes, results, args.trials)
    if args.json:
        report = {
            "machine": machine_info(),
            "quick": args.quick,
            "trials": args.trials,
            "waiting_runs": WAITING_RUNS,
            "modes": {m.name: asdict(m) for m in modes},
            "results": results,
        }
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
