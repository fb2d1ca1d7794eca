"""Engine benchmark: Keel against LangGraph (SQLite checkpointer) and DBOS (SQLite).

    python bench/engine.py [--quick] [--only keel,langgraph,dbos] [--json out.json]

Each peer is installed at a pinned version in its own venv under
`bench/.venvs/<peer>` (created on first use, reused while the versions
match); Keel runs from the repo's `.venv`. Every workload of every system
runs in a fresh subprocess with a fresh temp-dir database, so memory and
disk figures belong to that workload alone. Each cell is the median of 3
trials (1 with --quick). See bench/README.md for what each workload does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from _harness import (
    BENCH,
    REPO,
    TIMEOUT_S,
    bench_parser,
    choose,
    communicate_json,
    failure_label,
    keel_env,
    keel_python,
    log,
    machine_info,
    print_tables,
    timed,
    trial_count,
    with_trials,
    write_report,
)

VENVS = BENCH / ".venvs"
WORKLOADS = ("w1", "w2_200", "w2_1000", "w3", "w4")
INSTALL_TIMEOUT_S = 900.0
IMPORT_REPEATS = 5


@dataclass(frozen=True)
class System:
    name: str
    label: str
    script: str  # under bench/peers/
    import_stmt: str  # what a user of the system imports to run these workloads
    pins: dict[str, str] = field(default_factory=dict)  # distribution -> exact version
    venv: bool = True  # False: run with the repo's interpreter (Keel itself)


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        # keel's names resolve lazily, so bare `import keel` loads almost nothing;
        # touching App and Context imports what defining a workflow needs.
        System(
            "keel", "Keel", "keel_workloads.py", "import keel; keel.App; keel.Context", venv=False
        ),
        System(
            "langgraph",
            "LangGraph",
            "langgraph_workloads.py",
            "import langgraph.graph, langgraph.checkpoint.sqlite.aio",
            # The checkpointer is pinned too, so a rerun measures the same code.
            pins={"langgraph": "1.2.22", "langgraph-checkpoint-sqlite": "3.1.2"},
        ),
        System("dbos", "DBOS", "dbos_workloads.py", "import dbos", pins={"dbos": "3.4.0"}),
    )
}


# --- interpreters -------------------------------------------------------------


def installed_versions(python: Path, dists: Sequence[str]) -> dict[str, str | None]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(d):\n"
        "    try: return m.version(d)\n"
        "    except m.PackageNotFoundError: return None\n"
        "print(json.dumps({d: v(d) for d in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [str(python), "-c", code, *dists], capture_output=True, text=True, check=True
    )
    result: dict[str, str | None] = json.loads(out.stdout)
    return result


def ensure_venv(system: System) -> Path:
    """The peer's venv python, creating or re-pinning the venv when needed."""
    venv = VENVS / system.name
    python = venv / "bin" / "python"
    if python.exists() and installed_versions(python, list(system.pins)) == system.pins:
        return python
    if not python.exists():
        log(f"creating {venv.relative_to(REPO)}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    reqs = [f"{dist}=={ver}" for dist, ver in system.pins.items()]
    log(f"installing {' '.join(reqs)} into {venv.relative_to(REPO)}")
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *reqs],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    if pip.returncode != 0:  # pip's own warnings are noise unless the install failed
        sys.stderr.write(pip.stdout + pip.stderr)
        raise subprocess.CalledProcessError(pip.returncode, pip.args)
    return python


def child_env(system: System) -> dict[str, str]:
    return dict(os.environ) if system.venv else keel_env()


def prepare(system: System) -> tuple[Path | None, str | None]:
    """(python, None) when the system can run, else (None, reason shown in its cells)."""
    try:
        python = keel_python() if not system.venv else ensure_venv(system)
        check = subprocess.run(
            [str(python), "-c", system.import_stmt],
            env=child_env(system),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"setup failed: {exc}"
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"import failed: {last}"
    return python, None


# --- running workloads --------------------------------------------------------


def run_workload(system: System, python: Path, workload: str, quick: bool) -> dict[str, Any]:
    """One workload in a fresh process and fresh temp dir; never raises."""
    with tempfile.TemporaryDirectory(prefix=f"keel-bench-{system.name}-{workload}-") as tmp:
        cmd = [str(python), str(BENCH / "peers" / system.script), workload, "--dir", tmp]
        if quick:
            cmd.append("--quick")
        # Own session, so a timeout can kill the whole process group (DBOS threads etc.).
        result, _stderr = communicate_json(cmd, child_env(system))
    return result


def import_seconds(system: System, python: Path) -> float:
    """Min over fresh interpreters of the import alone (interpreter start excluded)."""
    code = (
        "import time; t = time.perf_counter()\n"
        f"{system.import_stmt}\n"
        "print(time.perf_counter() - t)"
    )
    times = []
    for _ in range(IMPORT_REPEATS):
        out = subprocess.run(
            [str(python), "-c", code],
            env=child_env(system),
            capture_output=True,
            text=True,
            check=True,
            timeout=TIMEOUT_S,
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return min(times)


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


def import_result(system: System, python: Path) -> dict[str, Any]:
    try:
        return {"ok": True, "seconds": import_seconds(system, python)}
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"ok": False, "error": f"import timing failed: {exc}"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(__doc__, "1 trial, fewer W1 runs")
    parser.add_argument("--only", default=",".join(SYSTEMS), help="comma list of systems")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list")
    args = parser.parse_args(argv)
    args.only = choose(parser, "only", args.only, list(SYSTEMS))
    args.workloads = choose(parser, "workloads", args.workloads, WORKLOADS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    trials = trial_count(args)
    systems = [SYSTEMS[name] for name in args.only]
    results = {s.name: bench_system(s, args.workloads, trials, args.quick) for s in systems}
    print_table(systems, results)
    if args.json:
        report = {
            "machine": machine_info(),
            "quick": args.quick,
            "trials": trials,
            "results": results,
        }
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
