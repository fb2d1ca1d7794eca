"""LLM gateway benchmark: what `keel.llm.Gateway` adds to a LiteLLM call, and rate limits.

    python bench/gateway.py [--quick] [--only latency,throughput] [--json out.json]

Latency: sequential calls through raw `litellm.acompletion(mock_response="ok")`
and through `Gateway.complete` (bare; with a SQLite store for budgets; with the
cache on, missing and hitting), the same for an offline `ScriptedModel`, and
`ctx.llm.text` inside a workflow (a journaled step). Each row is the median
(and p90) per call, plus the process's CPU time per call; the gateway's
overhead is the gateway's median minus raw LiteLLM's.

Throughput: 1,000 scripted calls started at once with `asyncio.gather`, with no
limit, under a rate limit that binds from an empty bucket, and under one that
starts full (a burst, then pacing). Every admission is timestamped, and the
bench checks that no stretch of time admitted more than the token bucket allows.

Each trial runs in a fresh process (the repo's Keel interpreter, as in
bench/engine.py) with a fresh temp-dir SQLite store; every number is the median
of 3 trials (1 with --quick). See bench/README.md, "LLM gateway".
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from _harness import (
    bench_parser,
    choose,
    failure_label,
    keel_env,
    keel_python,
    machine_info,
    median_result,
    run_json_child,
    run_reported,
    timed,
    trial_count,
    write_report,
)
from _harness import print_tables as render_tables

MODEL = "openai/gpt-4o-mini"  # answered by LiteLLM's mock_response: no network
MOCK = {"mock_response": "ok"}
SECTIONS = ("latency", "throughput")
BLOCK = 20  # timed calls per block; blocks of all variants rotate, so drift hits all alike
BLOCK_SKIP = 2  # first calls of each block, not counted (they absorb the previous block's
# leftovers: LiteLLM finishes its logging in tasks and a thread after a call returns)
CONCURRENT = 1000
TARGETS = {"overhead_ms": 1.0, "hit_ms": 0.5}  # issue 4: medians, per call
SEEDED_USAGE_ROWS = 10_000  # usage rows already in the store "today" for the day budget


@dataclass(frozen=True)
class Sizes:
    """--quick shrinks the repetition counts, never the shapes (1,000 concurrent calls)."""

    calls: int  # timed sequential calls per latency variant, in blocks of BLOCK
    warmup: int

    @classmethod
    def for_mode(cls, quick: bool) -> Sizes:
        return cls(calls=200, warmup=30) if quick else cls(calls=500, warmup=50)


@dataclass(frozen=True)
class Scenario:
    """One batch of CONCURRENT scripted calls behind ModelSpec(rpm=...)."""

    name: str
    label: str
    rpm: float | None
    drained: bool = False  # empty the bucket first, so the rate binds from the first call
    raw: bool = False  # raw litellm.acompletion to the same ScriptedModel, no gateway

    @property
    def rate(self) -> float | None:
        return self.rpm / 60.0 if self.rpm else None

    def expected_s(self, n: int = CONCURRENT) -> float | None:
        """The shortest wall time the token bucket allows for n requests."""
        if not self.rpm or not self.rate:
            return None
        start = 0.0 if self.drained else self.rpm  # a new bucket starts full
        return max(0.0, n - start) / self.rate

    def configured(self) -> str:
        if not self.rpm or not self.rate:
            return "none"
        pace = f"{self.rate:,.0f}/s"
        return f"{pace}, empty bucket" if self.drained else f"burst {self.rpm:,.0f}, then {pace}"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("raw", "raw LiteLLM, no gateway", None, raw=True),
    Scenario("unlimited", "Gateway, no limit", None),
    Scenario("paced", "Gateway, rpm=12,000, emptied", 12_000, drained=True),
    Scenario("burst", "Gateway, rpm=900, full bucket", 900),
)


# --- inside the worker process -------------------------------------------------


def messages(i: int, text: str = "Say ok.") -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{text} ({i})"}]


def summary(times: Sequence[float], cpu_s: float, cpu_calls: int) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {
        "median_ms": statistics.median(ms),
        "p90_ms": ms[int(0.9 * (len(ms) - 1))],
        "cpu_ms": cpu_s * 1000 / cpu_calls,  # process CPU (all threads) per call
        "n": len(ms),
    }


Call = Callable[[int], Awaitable[Any]]


def seed_usage(store: Any, workflow: str, rows: int) -> None:
    """`rows` metered calls of `workflow` made today, as if earlier runs had made them.

    Written straight into the bench's own temp store (the engine would write one
    per model step); only the budget query reads them.
    """
    now = time.time()
    db = store._db
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO usage (run_id, step_key, workflow, tenant, model, input_tokens,"
        " output_tokens, cost_usd, cache_hit, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [(f"old-{k}", "1", workflow, None, MODEL, 12, 1, 2e-6, 0, now - 1) for k in range(rows)],
    )
    # ...and the day's running total the store keeps beside them (schema v12)
    db.execute(
        "INSERT INTO usage_daily (scope, day, cost_usd) VALUES (?, ?, ?) ON CONFLICT"
        " (scope, day) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd",
        (f"wf:{workflow}", int((now - 1) // 86400) * 86400, rows * 2e-6),
    )
    db.execute("COMMIT")


async def latency(workdir: Path, sizes: Sizes) -> dict[str, Any]:
    """Per-call latency of each variant, measured in rotating blocks of sequential calls."""
    import keel
    from keel import config
    from keel.llm import _litellm
    from keel.llm.gateway import Budgets, CallContext, Gateway, ModelSpec
    from keel.llm.scripted import ScriptedModel
    from keel.store.sqlite import SQLiteStore

    lib = _litellm.litellm()  # LiteLLM imported Keel's way: local cost map, quiet
    store = SQLiteStore(f"sqlite:///{workdir / 'gateway.db'}")
    seed_usage(store, "bench-day", SEEDED_USAGE_ROWS)
    scripted = ScriptedModel(lambda _messages: "ok", name="bench-latency")

    def gw(target: Any, **kw: Any) -> Gateway:
        return Gateway({"m": ModelSpec(target)}, **kw)

    bare, cached = gw(MODEL, cache=False), gw(MODEL, cache=True)
    run_budget = gw(MODEL, cache=False, budgets=Budgets(per_run=1e6))
    day_budget = gw(MODEL, cache=False, budgets=Budgets(per_workflow_day=1e6))
    via_scripted = gw(scripted, cache=False)
    via_scripted._setup()  # registers the scripted provider for the raw row too
    cc = CallContext(workflow="bench", name="call", run_id="run-1")
    cc_store = CallContext(workflow="bench", name="call", run_id="run-1", store=store)
    cc_day = CallContext(workflow="bench-day", name="call", run_id="run-2", store=store)
    hit_msgs = messages(0, "Cached request.")
    await cached.complete(hit_msgs, cc_store, params=MOCK)  # the entry every hit reads
    miss_n = iter(range(10**9))  # every cache-miss request is new, warm-up included

    async def raw(i: int) -> Any:
        return await lib.acompletion(model=MODEL, messages=messages(i), **MOCK)

    async def hit(i: int) -> Any:
        resp = await cached.complete(hit_msgs, cc_store, params=MOCK)
        if not resp.cache_hit:
            raise AssertionError("expected a cache hit")
        return resp

    async def miss(i: int) -> Any:
        resp = await cached.complete(messages(next(miss_n), "Miss"), cc_store, params=MOCK)
        if resp.cache_hit:
            raise AssertionError("expected a cache miss")
        return resp

    direct: dict[str, Call] = {
        "raw": raw,
        "gateway": lambda i: bare.complete(messages(i), cc, params=MOCK),
        "budget_run": lambda i: run_budget.complete(messages(i), cc_store, params=MOCK),
        "budget_day": lambda i: day_budget.complete(messages(i), cc_day, params=MOCK),
        "miss": miss,
        "hit": hit,
        "raw_scripted": lambda i: lib.acompletion(model=scripted.model, messages=messages(i)),
        "scripted": lambda i: via_scripted.complete(messages(i), cc),
    }

    # ctx.llm: one model call per journaled step, timed inside the workflow.
    apps: dict[str, Any] = {}
    workflow_times: dict[str, list[float]] = {}
    run_walls: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # [CPU seconds, calls] per variant

    _, settings = config.load()  # KEEL_* variables and keel.toml, as keel.App reads them

    def make_app(name: str, cache: bool, tracing: bool) -> tuple[Any, Any]:
        app = keel.App(
            store=f"sqlite:///{workdir / f'{name}.db'}",
            settings=dataclasses.replace(settings, tracing=tracing),
            llm=gw(scripted, cache=cache),
        )
        times = workflow_times.setdefault(name, [])

        @app.workflow()
        async def llm_calls(ctx: keel.Context, n: int, block: int) -> int:
            for i in range(n):
                t0 = time.perf_counter()
                await ctx.llm.text(f"Say ok. ({block}/{i})")
                times.append(time.perf_counter() - t0)
            return n

        return app, llm_calls

    for name, cache, tracing in (
        ("ctx_llm_bare", False, False),
        ("ctx_llm", False, True),
        ("ctx_llm_cache", True, True),
    ):
        apps[name] = make_app(name, cache, tracing)

    blocks = iter(range(10**9))

    async def run_workflow(name: str, n: int) -> None:
        app, flow = apps[name]
        t0, c0 = time.perf_counter(), time.process_time()
        handle = await app.start(flow, {"n": n, "block": next(blocks)})
        if await handle.result() != n:
            raise AssertionError(f"{name}: workflow returned the wrong count")
        await app.trace(str(handle.id))  # waits for the run's span writes (read back too)
        run_walls.setdefault(name, []).append((time.perf_counter() - t0) / n)
        totals = cpu.setdefault(name, [0.0, 0])
        totals[0] += time.process_time() - c0  # whole run, start and finish included
        totals[1] += n

    timings: dict[str, list[float]] = {name: [] for name in direct}
    try:
        for fn in direct.values():  # warm-up: imports, tokenizer, prepared statements
            for i in range(sizes.warmup):
                await fn(i)
        for name in apps:
            await run_workflow(name, sizes.warmup)
            workflow_times[name].clear()
        run_walls.clear()
        cpu.clear()

        order = [*direct, *apps]
        for r in range(max(1, sizes.calls // BLOCK)):
            if r % 5 == 0:
                gc.collect()
            shift = r % len(order)
            for name in order[shift:] + order[:shift]:
                if name in apps:
                    before = len(workflow_times[name])
                    await run_workflow(name, BLOCK + BLOCK_SKIP)
                    del workflow_times[name][before : before + BLOCK_SKIP]
                    continue
                fn = direct[name]
                for i in range(BLOCK + BLOCK_SKIP):
                    if i == BLOCK_SKIP:
                        c0 = time.process_time()
                    t0 = time.perf_counter()
                    await fn(i)
                    if i >= BLOCK_SKIP:
                        timings[name].append(time.perf_counter() - t0)
                totals = cpu.setdefault(name, [0.0, 0])
                totals[0] += time.process_time() - c0
                totals[1] += BLOCK
    finally:
        for app, _ in apps.values():
            await app.close()
        await store.close()

    out: dict[str, Any] = {name: summary(ts, *cpu[name]) for name, ts in timings.items()}
    for name, ts in workflow_times.items():
        walls = {"run_ms_per_call": statistics.median(run_walls[name]) * 1000}
        out[name] = summary(ts, *cpu[name]) | walls
    pairs = {  # overhead name: (with, without)
        "gateway": ("gateway", "raw"),
        "budget_run": ("budget_run", "raw"),
        "budget_day": ("budget_day", "raw"),
        "miss": ("miss", "raw"),
        "scripted": ("scripted", "raw_scripted"),
        "journal": ("ctx_llm_bare", "scripted"),
        "tracing": ("ctx_llm", "ctx_llm_bare"),
    }
    out["overheads"] = {
        key: out[a]["median_ms"] - out[b]["median_ms"] for key, (a, b) in pairs.items()
    }
    out["cpu_overheads"] = {
        key: out[a]["cpu_ms"] - out[b]["cpu_ms"] for key, (a, b) in pairs.items()
    }
    out["usage_rows_seeded"] = SEEDED_USAGE_ROWS
    return out


def bucket_check(
    admitted: Sequence[float], t0: float, rate: float, start_level: float, capacity: float
) -> dict[str, float]:
    """How close the admissions came to what a token bucket allows; > 0 means it was exceeded.

    - ahead: max over k of k - (start_level + rate * (t_k - t0)), i.e. admitted
      beyond the tokens available since the start (start_level then the refill);
    - burst: max over windows [t_i, t_j] of (j - i + 1) - rate * (t_j - t_i),
      which may not exceed the bucket's capacity.
    """
    ts = sorted(admitted)
    ahead = max(k - (start_level + rate * (t - t0)) for k, t in enumerate(ts, 1))
    burst, low = float("-inf"), float("inf")
    for j, t in enumerate(ts, 1):
        low = min(low, (j - 1) - rate * t)  # the window may start at this admission
        burst = max(burst, (j - rate * t) - low)
    return {"ahead": ahead, "burst": burst, "burst_excess": burst - capacity}


async def throughput(scenario: Scenario) -> dict[str, Any]:
    """CONCURRENT concurrent scripted calls through one Gateway; admissions timestamped."""
    from keel.llm import _litellm
    from keel.llm.gateway import CallContext, Gateway, ModelSpec
    from keel.llm.ratelimit import RateLimiter
    from keel.llm.scripted import ScriptedModel

    admitted: list[float] = []
    acquire = RateLimiter.acquire

    async def recording_acquire(self: RateLimiter, tokens: int) -> float:
        waited = await acquire(self, tokens)
        admitted.append(time.monotonic())  # the bucket's own clock
        return waited

    RateLimiter.acquire = recording_acquire  # type: ignore[method-assign]

    scripted = ScriptedModel(lambda _messages: "ok", name=f"bench-{scenario.name}")
    cc = CallContext(workflow="bench", name="call", run_id="run-1")
    # Warm up imports, the tokenizer and the provider on a separate, unlimited gateway.
    warm = Gateway({"m": ModelSpec(scripted)}, cache=False)
    await asyncio.gather(*(warm.complete(messages(-i), cc) for i in range(50)))

    gateway = Gateway({"m": ModelSpec(scripted, rpm=scenario.rpm)}, cache=False)
    start_level = 0.0
    gc.collect()
    t0 = time.monotonic()
    if scenario.rpm:
        # Create the model's limiter now (the first call would), so t0 is its bucket's start.
        limiter = gateway._limiter("m", gateway.spec("m"))
        bucket = limiter.requests if limiter is not None else None
        assert bucket is not None
        if scenario.drained:
            bucket.level, bucket.stamp = 0.0, time.monotonic()
        start_level, t0 = bucket.level, bucket.stamp
    if scenario.raw:
        lib = _litellm.litellm()
        target = scripted.model
        sends = (lib.acompletion(model=target, messages=messages(i)) for i in range(CONCURRENT))
        raw = await asyncio.gather(*sends)
        results = [_litellm.convert(r, scripted.model) for r in raw]
    else:
        calls = (gateway.complete(messages(i), cc) for i in range(CONCURRENT))
        results = await asyncio.gather(*calls)
    elapsed = time.monotonic() - t0
    if any(r.content != "ok" for r in results):
        raise AssertionError("a scripted call returned the wrong content")

    out: dict[str, Any] = {
        "scenario": scenario.name,
        "calls": CONCURRENT,
        "seconds": elapsed,
        "calls_per_s": CONCURRENT / elapsed,
    }
    if scenario.rpm and scenario.rate:
        if len(admitted) != CONCURRENT:
            raise AssertionError(f"{len(admitted)} admissions recorded, not {CONCURRENT}")
        check = bucket_check(admitted, t0, scenario.rate, start_level, scenario.rpm)
        out |= check
        out["limit_held"] = check["ahead"] <= 1e-6 and check["burst_excess"] <= 1e-6
        out["expected_s"] = scenario.expected_s()
        out["first_admission_s"] = min(admitted) - t0
        if start_level >= 1:  # when the starting tokens were all spent
            out["burst_end_s"] = sorted(admitted)[int(start_level) - 1] - t0
        out["last_admission_s"] = max(admitted) - t0
        # The paced part alone: admissions beyond the starting tokens, over the whole time.
        out["paced_rate_per_s"] = (CONCURRENT - start_level) / (max(admitted) - t0)
    return out


def worker_main(args: argparse.Namespace) -> int:
    """Child-process entry: one section, one JSON line on stdout; never raises."""
    out: dict[str, Any] = {"section": args.worker}

    def run() -> dict[str, Any]:
        if args.worker == "latency":
            return asyncio.run(latency(args.dir, Sizes.for_mode(args.quick)))
        scenario = next(s for s in SCENARIOS if s.name == args.worker)
        return asyncio.run(throughput(scenario))

    run_reported(out, run)
    return 0


# --- the harness ---------------------------------------------------------------


def run_child(worker: str, quick: bool) -> dict[str, Any]:
    """One worker in a fresh process and fresh temp dir; never raises."""
    with tempfile.TemporaryDirectory(prefix=f"keel-bench-gateway-{worker}-") as tmp:
        cmd = [str(keel_python()), str(Path(__file__).resolve()), "--worker", worker]
        cmd += ["--dir", tmp] + (["--quick"] if quick else [])
        return run_json_child(cmd, keel_env())


def flatten(result: dict[str, Any]) -> dict[str, Any]:
    """One level of keys ("gateway.median_ms"), so median_result can take medians."""
    flat: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    return flat


def bench(sections: Sequence[str], trials: int, quick: bool) -> dict[str, dict[str, Any]]:
    """{worker: median result with its trials}; workers alternate within a trial."""
    workers = [w for s in sections for w in (["latency"] if s == "latency" else SCENARIO_NAMES)]
    runs: dict[str, list[dict[str, Any]]] = {w: [] for w in workers}
    for t in range(trials):
        for w in workers:
            result = timed(f"{w} trial {t + 1}/{trials}", partial(run_child, w, quick))
            runs[w].append(flatten(result))
    out: dict[str, dict[str, Any]] = {}
    for w, ts in runs.items():
        merged = median_result(ts)
        good = [t for t in ts if t.get("ok")]
        if good and "limit_held" in good[0]:  # held in every trial; worst excess over trials
            merged["limit_held"] = all(t["limit_held"] for t in good)
            for key in ("ahead", "burst_excess"):
                merged[key] = max(t[key] for t in good)
        out[w] = merged | {"trials": ts}
    return out


SCENARIO_NAMES = [s.name for s in SCENARIOS]


# --- the tables ----------------------------------------------------------------

LATENCY_ROWS: tuple[tuple[str, str], ...] = (
    ("raw", "raw litellm.acompletion(mock_response)"),
    ("gateway", "Gateway.complete: no store, cache off"),
    ("budget_run", "  + SQLite store, per_run budget"),
    ("budget_day", f"  + SQLite store, per_workflow_day budget, {SEEDED_USAGE_ROWS:,} calls today"),
    ("miss", "  + SQLite store, cache on, miss (lookup + write)"),
    ("hit", "  + SQLite store, cache on, hit"),
    ("raw_scripted", "raw litellm.acompletion -> ScriptedModel"),
    ("scripted", "Gateway.complete -> ScriptedModel, cache off"),
    ("ctx_llm_bare", "ctx.llm.text in a workflow -> ScriptedModel, cache off, no tracing"),
    ("ctx_llm", "  same, tracing on (the default)"),
    ("ctx_llm_cache", "  same, tracing on, cache on (the defaults; all misses)"),
)

OVERHEAD_ROWS: tuple[tuple[str, str, float | None], ...] = (
    ("gateway", "gateway overhead: bare gateway - raw", TARGETS["overhead_ms"]),
    ("budget_run", "  with per_run budget - raw", None),
    ("budget_day", f"  with per_workflow_day budget ({SEEDED_USAGE_ROWS:,} today) - raw", None),
    ("miss", "  with cache on, miss - raw", None),
    ("scripted", "gateway overhead, ScriptedModel: gateway - raw", None),
    ("journal", "journaled step: ctx.llm (no tracing, cache off) - gateway", None),
    ("tracing", "tracing: ctx.llm tracing on - off", None),
)


def _mark(value: float, bound: float | None) -> str:
    text = f"{value:.3f}"
    return text if bound is None else text + (" ✓" if value <= bound else " ✗")


def latency_rows(res: dict[str, Any]) -> list[list[str]]:
    if not res.get("ok"):
        return [["latency", failure_label(res), "", "", ""]]
    rows = []
    for key, label in LATENCY_ROWS:
        bound = TARGETS["hit_ms"] if key == "hit" else None
        med, p90, cpu = (res[f"{key}.{m}"] for m in ("median_ms", "p90_ms", "cpu_ms"))
        target = f"≤ {bound:g}" if bound else ""
        rows.append([label, _mark(med, bound), f"{p90:.3f}", f"{cpu:.3f}", target])
    for key, label, bound in OVERHEAD_ROWS:
        value, cpu = res[f"overheads.{key}"], res[f"cpu_overheads.{key}"]
        rows.append([label, _mark(value, bound), "", f"{cpu:.3f}", f"≤ {bound:g}" if bound else ""])
    return rows


def throughput_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for s in SCENARIOS:
        res = results.get(s.name)
        if res is None:
            continue
        if not res.get("ok"):
            rows.append([s.label, s.configured(), failure_label(res), "", "", "", ""])
            continue
        expected = s.expected_s()
        paced = res.get("paced_rate_per_s")
        held = res.get("limit_held")
        rows.append(
            [
                s.label,
                s.configured(),
                f"{res['seconds']:.2f}",
                "" if expected is None else f"{expected:.2f}",
                f"{res['calls_per_s']:,.0f}",
                "" if paced is None else f"{paced:,.1f}",
                "" if held is None else ("yes ✓" if held else "NO ✗"),
            ]
        )
    return rows


def print_tables(results: dict[str, dict[str, Any]]) -> None:
    tables: list[tuple[str, list[str], list[list[str]]]] = []
    if "latency" in results:
        header = ["per call, sequential (ms)", "median", "p90", "CPU", "target"]
        rows = latency_rows(results["latency"])
        tables.append(("Keel LLM gateway: latency (median of trials)", header, rows))
    if any(s.name in results for s in SCENARIOS):
        header = [
            f"{CONCURRENT:,} concurrent scripted calls",
            "limit",
            "wall (s)",
            "minimum (s)",
            "calls/s",
            "paced (/s)",
            "limit held",
        ]
        rows = throughput_rows(results)
        tables.append(("Keel LLM gateway: throughput (median of trials)", header, rows))
    render_tables(tables, width=120, plain_titles=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(__doc__, "1 trial, 200 calls per variant")
    parser.add_argument("--only", default=",".join(SECTIONS), help="latency,throughput")
    # Internal: the harness re-runs this file as a worker for each section and trial.
    workers = ["latency", *SCENARIO_NAMES]
    parser.add_argument("--worker", choices=workers, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.only = choose(parser, "only", args.only, SECTIONS)
    if args.worker == "latency" and args.dir is None:
        parser.error("--worker latency needs --dir")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    trials = trial_count(args)
    results = bench(args.only, trials, args.quick)
    print_tables(results)
    if args.json:
        report = {
            "machine": machine_info(),
            "quick": args.quick,
            "trials": trials,
            "sizes": asdict(Sizes.for_mode(args.quick)),
            "scenarios": {s.name: asdict(s) for s in SCENARIOS},
            "results": results,
        }
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
