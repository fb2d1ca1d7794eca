"""Engine benchmark: Keel against LangGraph (SQLite checkpointer) and DBOS, on SQLite
and on Postgres; and Keel on Temporal against raw temporalio.

    python bench/engine.py [--quick] [--only keel,langgraph,dbos] [--json out.json]
    python bench/engine.py --store postgres [--durable] [--pg URL] [--procs 1,2,4]
    python bench/engine.py --only keel,keel-temporal,temporal,temporal-local [--quick]

Each peer is installed at a pinned version in its own venv under
`bench/.venvs/<peer>` (created on first use, reused while the versions
match); Keel runs from the repo's `.venv`. Every workload of every system
runs in a fresh subprocess with a fresh temp-dir database (on Postgres: a
fresh database on the same server), so memory and disk figures belong to that
workload alone. Each cell is the median of 3 trials (1 with --quick). The
Postgres section (bench/_pg_section.py) adds a floor (a bare psycopg INSERT +
COMMIT per step) and W3 with several Keel worker processes. The Temporal systems
(bench/_temporal_systems.py) run against one dev server started for the run, with a
column for Keel's layer over raw temporalio. See bench/README.md for what each
workload does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import _pg_section as pg_section
import _temporal_systems as temporal
from _harness import (
    bench_parser,
    choose,
    failure_label,
    load_text,
    log,
    machine_info,
    print_tables,
    timed,
    trial_count,
    with_trials,
    write_report,
)
from _systems import (
    PROCS_WORKLOAD,
    SYSTEMS,
    WORKLOADS,
    System,
    import_result,
    prepare,
    run_workload,
)

ALL_SYSTEMS = {**SYSTEMS, **temporal.TEMPORAL_SYSTEMS}  # the names --only takes

# --- the table ----------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    label: str
    workload: str
    key: str
    fmt: str
    target: tuple[str, float] | None = None  # Keel's target from the issue: ("<=", x)

    def cell(self, result: dict[str, Any] | None) -> str:
        if result is None:
            return "-"
        if not result.get("ok"):
            return failure_label(result)
        return format(result[self.key], self.fmt)

    def meets(self, value: float) -> bool:
        assert self.target is not None
        op, bound = self.target
        return value <= bound if op == "<=" else value >= bound

    def target_text(self) -> str:
        if self.target is None:
            return ""
        op, bound = self.target
        return f"{'≤' if op == '<=' else '≥'} {bound:g}"


METRICS = (
    Metric("import (s)", "import", "seconds", ".3f", ("<=", 0.2)),
    Metric("W1 overhead per durable step (ms)", "w1", "ms_per_step", ".3f", ("<=", 0.5)),
    Metric("W1 stored bytes per step", "w1", "stored_bytes_per_step", ",.0f"),
    Metric("W1 bytes written per step", "w1", "written_bytes_per_step", ",.0f"),
    Metric("W2 fan-out 200 x 50 ms (s)", "w2_200", "seconds", ".3f"),
    Metric("W2 fan-out 1,000 x 50 ms (s)", "w2_1000", "seconds", ".3f", ("<=", 0.25)),
    Metric("W3 200 concurrent 5-step workflows (wf/s)", "w3", "wf_per_s", ",.0f", (">=", 350)),
    Metric("W4 worker RSS per suspended run (KB)", "w4", "kb_per_suspended_run", ".1f", ("<=", 5)),
    Metric("W4 time to suspend 1,000 runs (s)", "w4", "suspend_all_s", ".2f"),
    Metric("W4 time to resume 1,000 runs (s)", "w4", "resume_all_s", ".2f", ("<=", 1.0)),
)


def table_rows(
    systems: Sequence[System], results: dict[str, dict[str, dict[str, Any]]]
) -> list[list[str]]:
    rows = []
    ran = {w for s in systems for w in results.get(s.name, {})}
    for m in METRICS:
        if m.workload not in ran:
            continue  # deselected with --workloads
        row = [m.label]
        for s in systems:
            res = results.get(s.name, {}).get(m.workload)
            text = m.cell(res)
            if s.name == "keel" and m.target and res and res.get("ok"):
                text += " ✓" if m.meets(res[m.key]) else " ✗"
            row.append(text)
        row.append(m.target_text())
        rows.append(row)
    return rows


def print_table(systems: Sequence[System], results: dict[str, dict[str, dict[str, Any]]]) -> None:
    header = ["metric", *(s.label for s in systems), "Keel target"]
    rows = table_rows(systems, results)
    print_tables([("Keel engine benchmark (median of trials)", header, rows)])


# --- orchestration ------------------------------------------------------------


def bench_system(
    system: System, workloads: Sequence[str], trials: int, quick: bool
) -> dict[str, dict[str, Any]]:
    python, reason = prepare(system)
    if python is None:
        log(f"{system.name}: {reason}")
        return {w: {"ok": False, "error": reason} for w in ("import", *workloads)}
    out: dict[str, dict[str, Any]] = {}
    out["import"] = timed(f"{system.name} import", partial(import_result, system, python))
    for workload in workloads:
        runs = [
            timed(
                f"{system.name} {workload} trial {t + 1}/{trials}",
                partial(run_workload, system, python, workload, quick),
            )
            for t in range(trials)
        ]
        out[workload] = with_trials(runs)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(__doc__, "1 trial, fewer W1 runs")
    parser.add_argument(
        "--only",
        default=",".join(SYSTEMS),
        help=f"comma list of systems [default: {','.join(SYSTEMS)}; also"
        f" {','.join(temporal.TEMPORAL_SYSTEMS)}, on one Temporal dev server]",
    )
    parser.add_argument(
        "--workloads",
        default=",".join((*WORKLOADS, PROCS_WORKLOAD)),
        help=f"comma list ({PROCS_WORKLOAD}: W3 with N worker processes, Postgres only)",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgres", "both"),
        help="which stores to bench [default: both when Postgres can be started or --pg is"
        " given, else sqlite]",
    )
    parser.add_argument(
        "--pg",
        metavar="URL",
        help="use this Postgres server (a database to"
        " CREATE/DROP the bench's databases from) instead of a throwaway one",
    )
    parser.add_argument(
        "--durable",
        action="store_true",
        help="start the throwaway Postgres"
        " with fsync, synchronous_commit and full_page_writes on (its defaults)",
    )
    parser.add_argument("--procs", default="1,2,4", help="worker processes for W3 on Postgres")
    args = parser.parse_args(argv)
    args.only = choose(parser, "only", args.only, list(ALL_SYSTEMS))
    args.workloads = choose(parser, "workloads", args.workloads, (*WORKLOADS, PROCS_WORKLOAD))
    try:
        args.procs = [int(n) for n in args.procs.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--procs: a comma list of worker counts, got {args.procs!r}")
    if not args.procs or min(args.procs) < 1:
        parser.error("--procs: every worker count must be at least 1")
    problem = args.pg and pg_section.check_url(args.pg)
    if problem:
        parser.error(f"--pg: {problem}")
    if args.durable and args.pg:
        parser.error(
            "--durable starts a throwaway server; an existing one (--pg) keeps its own settings"
        )
    if args.store is None and set(args.only) & set(temporal.TEMPORAL_SYSTEMS):
        args.store = "sqlite"  # the Temporal comparison: Keel's engine on its default store
    if args.store is None:
        args.store = "both" if args.pg or pg_section.binaries_available() else "sqlite"
    elif args.store != "sqlite" and not args.pg and not pg_section.binaries_available():
        parser.error(
            "--store postgres: no Postgres binaries here (apt-get install postgresql)"
            " and no --pg URL"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    trials = trial_count(args)
    report: dict[str, Any] = {"machine": machine_info(), "quick": args.quick, "trials": trials}
    log(f"load average {load_text()}")
    on_stores = [SYSTEMS[name] for name in args.only if name in SYSTEMS]  # not Temporal
    if args.store in ("sqlite", "both") and on_stores:
        workloads = [w for w in args.workloads if w in WORKLOADS]
        results = {s.name: bench_system(s, workloads, trials, args.quick) for s in on_stores}
        print_table(on_stores, results)
        report["results"] = results
    if set(args.only) & set(temporal.TEMPORAL_SYSTEMS):
        report["temporal"] = temporal.run(args, trials)
    if args.store in ("postgres", "both") and on_stores:  # Temporal keeps its own store
        report["postgres"] = pg_section.run(args, trials)
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
