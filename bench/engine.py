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
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENVS = BENCH / ".venvs"
WORKLOADS = ("w1", "w2_200", "w2_1000", "w3", "w4")
TIMEOUT_S = 120.0  # per workload process: a hung peer is a "timeout" cell, not a hung bench
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


def keel_python() -> Path:
    repo_python = REPO / ".venv" / "bin" / "python"
    return repo_python if repo_python.exists() else Path(sys.executable)


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
    env = dict(os.environ)
    if not system.venv:
        # Keel may not be pip-installed into .venv; the source tree must win either way.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


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


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run_workload(system: System, python: Path, workload: str, quick: bool) -> dict[str, Any]:
    """One workload in a fresh process and fresh temp dir; never raises."""
    with tempfile.TemporaryDirectory(prefix=f"keel-bench-{system.name}-{workload}-") as tmp:
        cmd = [str(python), str(BENCH / "peers" / system.script), workload, "--dir", tmp]
        if quick:
            cmd.append("--quick")
        # Own session, so a timeout can kill the whole process group (DBOS threads etc.).
        proc = subprocess.Popen(
            cmd,
            env=child_env(system),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"ok": False, "error": f"timeout after {TIMEOUT_S:.0f} s"}
    return parse_result(proc.returncode, stdout, stderr)


def parse_result(returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (stderr.strip().splitlines() or [f"exit code {returncode}"])[-1]
        return {"ok": False, "error": f"no result ({tail})"}
    if not result.get("ok"):
        result.setdefault("error", "failed")
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


def median_result(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-metric median over the successful trials; an error if none succeeded."""
    good = [t for t in trials if t.get("ok")]
    if not good:
        return {"ok": False, "error": trials[-1].get("error", "failed") if trials else "not run"}
    merged: dict[str, Any] = dict(good[-1])
    for key, value in good[-1].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            merged[key] = statistics.median(t[key] for t in good)
    merged["trials_ok"] = f"{len(good)}/{len(trials)}"
    return merged


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
            return "timeout" if "timeout" in str(result.get("error")) else "error"
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
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # the peers' venvs and bare interpreters have no rich
        print_plain(header, rows)
        return
    table = Table(title="Keel engine benchmark (median of trials)")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    # Rich assumes 80 columns when piped (make bench | tee); wrap less there.
    Console(width=None if sys.stdout.isatty() else 110).print(table)


def print_plain(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        pairs = zip(row, widths, strict=True)
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(pairs)]
        print("  ".join(cells))


# --- orchestration ------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": __import__("sqlite3").sqlite_version,
    }


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
        out[workload] = median_result(runs) | {"trials": runs}
    return out


def import_result(system: System, python: Path) -> dict[str, Any]:
    try:
        return {"ok": True, "seconds": import_seconds(system, python)}
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"ok": False, "error": f"import timing failed: {exc}"}


def timed(what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = fn()
    status = "ok" if result.get("ok") else f"FAILED: {result.get('error')}"
    log(f"{what}: {status} ({time.perf_counter() - t0:.1f} s)")
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 trial, fewer W1 runs")
    parser.add_argument("--only", default=",".join(SYSTEMS), help="comma list of systems")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list")
    parser.add_argument("--trials", type=int, help="override the number of trials")
    parser.add_argument("--json", type=Path, help="also write all results (every trial) here")
    args = parser.parse_args(argv)
    for opt, allowed in (("only", SYSTEMS), ("workloads", WORKLOADS)):
        chosen = [x.strip() for x in getattr(args, opt).split(",") if x.strip()]
        unknown = sorted(set(chosen) - set(allowed))
        if unknown:
            parser.error(f"--{opt}: unknown {unknown}; choose from {', '.join(allowed)}")
        setattr(args, opt, chosen)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    trials = args.trials or (1 if args.quick else 3)
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
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
