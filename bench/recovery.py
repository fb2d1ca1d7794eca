"""Failure-recovery benchmark: Keel workflows whose tools fail at a seeded rate.

    python bench/recovery.py [--quick] [--json out.json] [--seed N]

200 runs of a 5-step workflow, all started at once, each step a call of a
tool that raises an HTTP-503-like error (an exception with `status_code =
503`) on a seeded share of its attempts. Two policies:

- retry:   30% of attempts fail; Retry(attempts=6, backoff=5 ms, max_backoff=50 ms)
           and no fallback, so a step that fails 6 times fails its run.
- degrade: 60% of attempts fail; Retry(attempts=3, budget=5 retries per run)
           plus Fallback.degrade(default=None), so a step that runs out of
           attempts or budget returns None and the run is marked degraded.

Each variant also runs the same 200 runs with no faults, for the wall-time
ratio. Every batch runs in a fresh process (the repo's Keel interpreter, as in
bench/engine.py) with a fresh temp-dir SQLite store; each number is the median
of 3 trials (1 with --quick). See bench/README.md, "Failure recovery".
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from _harness import (
    bench_parser,
    choose,
    keel_env,
    keel_python,
    machine_info,
    ok_value,
    print_tables,
    rows_by_column,
    run_json_child,
    run_reported,
    timed,
    trial_count,
    with_trials,
    write_report,
)

RUNS = 200
STEPS = 5
DEFAULT_SEED = 3  # issue 3; the same seed every trial, so only the timings vary
MODES = ("clean", "faults")


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    fault_rate: float  # share of tool attempts that raise the 503
    retry: dict[str, Any] = field(default_factory=dict)  # keel.Retry kwargs, seed added
    degrade: bool = False  # Fallback.degrade(default=None) on the tool

    def policy_text(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.retry.items())
        text = f"Retry({args})"
        return text + " + Fallback.degrade(None)" if self.degrade else text


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "retry",
            "retry, 30% faults",
            0.30,
            {"attempts": 6, "backoff": 0.005, "max_backoff": 0.05},
        ),
        Variant(
            "degrade",
            "budget + degrade, 60% faults",
            0.60,
            {"attempts": 3, "backoff": 0.005, "max_backoff": 0.05, "budget": 5},
            degrade=True,
        ),
    )
}


# --- one batch, inside a fresh Keel process ------------------------------------


class ServiceUnavailable(Exception):
    """What an HTTP client raises on a 503; Keel's default classification retries it."""

    status_code = 503


async def run_batch(variant: Variant, faulty: bool, workdir: Path, seed: int) -> dict[str, Any]:
    """RUNS concurrent runs of the STEPS-step workflow; wall time, then their journals."""
    import keel
    from keel.types import StepKind, StepStatus

    rate = variant.fault_rate if faulty else 0.0
    injected = 0  # 503s raised in the timed runs, to cross-check the journal

    app = keel.App(store=f"sqlite:///{workdir / 'keel.db'}")

    @app.tool(
        retry=keel.Retry(**variant.retry, seed=seed),
        fallback=keel.Fallback.degrade(default=None) if variant.degrade else None,
    )
    async def flaky(run: int, step: int) -> int:
        nonlocal injected
        info = keel.current_step()
        assert info is not None
        # Seeded per (run, step, attempt): the same faults whatever order runs interleave in.
        if random.Random(f"{seed}/{run}/{step}/{info.attempt}").random() < rate:
            if run >= 0:
                injected += 1
            raise ServiceUnavailable(f"503 Service Unavailable (run {run}, step {step})")
        return step

    @app.workflow()
    async def pipeline(ctx: keel.Context, run: int) -> int:
        with_data = 0
        for step in range(STEPS):
            if await ctx.call(flaky, run, step) is not None:
                with_data += 1
        return with_data

    async def one(run: int) -> str:
        handle = await app.start(pipeline, {"run": run})
        try:
            await handle.result()
        except keel.RunFailed:
            pass  # counted from the store below
        return str(handle.id)

    try:
        await one(-1)  # warm-up run, not timed or counted
        t0 = time.perf_counter()
        run_ids = await asyncio.gather(*(one(k) for k in range(RUNS)))
        elapsed = time.perf_counter() - t0

        out: dict[str, Any] = {
            "variant": variant.name,
            "mode": "faults" if faulty else "clean",
            "fault_rate": rate,
            "runs": RUNS,
            "seconds": elapsed,
            "succeeded": 0,
            "failed": 0,
            "runs_degraded": 0,
            "degraded_steps": 0,
            "tool_steps": 0,
            "attempts": 0,
            "retries": 0,
            "failed_attempts": 0,
            "budget_fallbacks": 0,
            "faults_injected": 0,
            "slowest_run_s": 0.0,
        }
        for run_id in run_ids:
            info = await app.get_run(run_id)
            out["succeeded"] += info.status is keel.RunStatus.SUCCEEDED
            out["failed"] += info.status is keel.RunStatus.FAILED
            out["runs_degraded"] += bool(info.degraded)
            out["degraded_steps"] += len(info.degraded)
            if info.ended_at is not None:
                run_s = info.ended_at - info.created_at
                out["slowest_run_s"] = max(out["slowest_run_s"], run_s)
            for rec in await app.steps(run_id):
                if rec.kind is not StepKind.TOOL:
                    continue
                clean_success = rec.status is StepStatus.OK and rec.fallback is None
                out["tool_steps"] += 1
                out["attempts"] += rec.attempts
                out["retries"] += rec.attempts - 1
                out["failed_attempts"] += rec.attempts - clean_success
                if rec.error is not None and rec.error.type == "BudgetExceeded":
                    out["budget_fallbacks"] += 1
    finally:
        await app.close()
    out["faults_injected"] = injected
    if out["failed_attempts"] != injected:
        raise AssertionError(
            f"journal shows {out['failed_attempts']} failed attempts, tool raised {injected}"
        )
    out["completion_rate"] = out["succeeded"] / RUNS
    out["attempts_per_step"] = out["attempts"] / max(1, out["tool_steps"])
    return out


def worker_main(args: argparse.Namespace) -> int:
    """Child-process entry: one batch, one JSON line on stdout; never raises."""
    out: dict[str, Any] = {"variant": args.worker, "mode": args.mode}
    batch = partial(run_batch, VARIANTS[args.worker], args.mode == "faults", args.dir, args.seed)
    run_reported(out, lambda: asyncio.run(batch()))
    return 0


# --- the harness ---------------------------------------------------------------


def run_child(variant: Variant, mode: str, seed: int) -> dict[str, Any]:
    """One batch in a fresh process and fresh temp dir; never raises."""
    with tempfile.TemporaryDirectory(prefix=f"keel-bench-recovery-{variant.name}-") as tmp:
        cmd = [
            str(keel_python()),
            str(Path(__file__).resolve()),
            "--worker",
            variant.name,
            "--mode",
            mode,
            "--dir",
            tmp,
            "--seed",
            str(seed),
        ]
        return run_json_child(cmd, keel_env())


def bench(variants: Sequence[Variant], trials: int, seed: int) -> dict[str, dict[str, Any]]:
    """{variant: {mode: median result with its trials}}; the modes alternate per trial."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        v.name: {m: [] for m in MODES} for v in variants
    }
    for t in range(trials):
        for v in variants:
            for mode in MODES:
                what = f"{v.name} {mode} trial {t + 1}/{trials}"
                result = timed(what, partial(run_child, v, mode, seed))
                runs[v.name][mode].append(result)
    return {
        name: {mode: with_trials(ts) for mode, ts in by_mode.items()}
        for name, by_mode in runs.items()
    }


_get = ok_value


def _count(n: float) -> str:
    return f"{n:,.0f}"


ROWS: tuple[tuple[str, Any], ...] = (
    ("share of attempts failing (503)", lambda c, f: f"{_get(f, 'fault_rate'):.0%}"),
    ("completion rate (SUCCEEDED / 200)", lambda c, f: f"{_get(f, 'completion_rate'):.1%}"),
    ("runs failed", lambda c, f: _count(_get(f, "failed"))),
    ("runs with degraded steps", lambda c, f: _count(_get(f, "runs_degraded"))),
    ("degraded steps (RunInfo.degraded)", lambda c, f: _count(_get(f, "degraded_steps"))),
    ("  of which: retry budget spent", lambda c, f: _count(_get(f, "budget_fallbacks"))),
    ("tool steps journaled", lambda c, f: _count(_get(f, "tool_steps"))),
    ("total attempts", lambda c, f: _count(_get(f, "attempts"))),
    ("retries", lambda c, f: _count(_get(f, "retries"))),
    ("attempts per step", lambda c, f: f"{_get(f, 'attempts_per_step'):.2f}"),
    ("failed attempts (503s raised)", lambda c, f: _count(_get(f, "failed_attempts"))),
    ("wall time, no faults (s)", lambda c, f: f"{_get(c, 'seconds'):.3f}"),
    ("wall time, with faults (s)", lambda c, f: f"{_get(f, 'seconds'):.3f}"),
    ("faults / no faults", lambda c, f: f"{_get(f, 'seconds') / _get(c, 'seconds'):.2f}x"),
    ("slowest run, no faults (s)", lambda c, f: f"{_get(c, 'slowest_run_s'):.3f}"),
    ("slowest run, with faults (s)", lambda c, f: f"{_get(f, 'slowest_run_s'):.3f}"),
)


def table_rows(variants: Sequence[Variant], results: dict[str, dict[str, Any]]) -> list[list[str]]:
    columns = [(results[v.name]["clean"], results[v.name]["faults"]) for v in variants]
    return rows_by_column(ROWS, columns)


def print_table(variants: Sequence[Variant], results: dict[str, dict[str, Any]]) -> None:
    header = ["metric", *(v.label for v in variants)]
    title = f"Keel failure recovery: {RUNS} runs x {STEPS} steps (median of trials)"
    print_tables([(title, header, table_rows(variants, results))])


def print_policies(variants: Sequence[Variant]) -> None:
    for v in variants:
        print(f"{v.label}: {v.policy_text()}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(__doc__, "1 trial instead of 3")
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma list of variants")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="fault and jitter seed")
    # Internal: the harness re-runs this file as a worker for each batch.
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, default="faults", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.only = choose(parser, "only", args.only, list(VARIANTS))
    if args.worker and args.dir is None:
        parser.error("--worker needs --dir")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    trials = trial_count(args)
    variants = [VARIANTS[name] for name in args.only]
    results = bench(variants, trials, args.seed)
    print_table(variants, results)
    print_policies(variants)
    if args.json:
        report = {
            "machine": machine_info(),
            "quick": args.quick,
            "trials": trials,
            "seed": args.seed,
            "runs": RUNS,
            "steps": STEPS,
            "variants": {v.name: asdict(v) for v in variants},
            "results": results,
        }
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
