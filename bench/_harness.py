"""Harness code shared by the bench scripts (engine, recovery, tracing, gateway, hitl).

Each script runs every measured batch in a fresh child process that prints one
JSON object on its last stdout line; the pieces for that (starting the child,
killing it on timeout, reading its result), for medians over trials, for the
command line, the table and the JSON report live here once.

This runs on the harness side (the repo's interpreter); code that peer venvs
import belongs in `bench/peers/_common.py`, which stays stdlib-only.
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
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from peers._common import run_reported

__all__ = [
    "BENCH",
    "REPO",
    "TIMEOUT_S",
    "bench_parser",
    "cell",
    "choose",
    "communicate_json",
    "failure_label",
    "keel_env",
    "keel_python",
    "load_text",
    "log",
    "machine_info",
    "median_result",
    "ok_value",
    "parse_result",
    "print_plain",
    "print_tables",
    "rows_by_column",
    "run_json_child",
    "run_reported",
    "timed",
    "trial_count",
    "with_trials",
    "write_report",
]

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TIMEOUT_S = 120.0  # per child process: a hung batch is a "timeout" cell, not a hung bench


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --- the Keel interpreter -------------------------------------------------------


def keel_python() -> Path:
    repo_python = REPO / ".venv" / "bin" / "python"
    return repo_python if repo_python.exists() else Path(sys.executable)


def keel_env() -> dict[str, str]:
    """The environment for a child running Keel from this source tree."""
    env = dict(os.environ)
    # Keel may not be pip-installed into .venv; the source tree must win either way.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# --- child processes ------------------------------------------------------------


def communicate_json(
    cmd: Sequence[str], env: dict[str, str], cwd: str | Path | None = None
) -> tuple[dict[str, Any], str | None]:
    """Run `cmd` in its own session; (its JSON result, its stderr). Never raises.

    A child running past TIMEOUT_S is killed with its whole process group (DBOS
    threads, a `keel worker` it started, ...); its stderr is then None.
    """
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=env,
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
        return {"ok": False, "error": f"timeout after {TIMEOUT_S:.0f} s"}, None
    return parse_result(proc.returncode, stdout, stderr), stderr


def run_json_child(
    cmd: Sequence[str], env: dict[str, str], *, echo_stderr: bool = True
) -> dict[str, Any]:
    """communicate_json, passing a failed child's stderr on to ours when asked."""
    result, stderr = communicate_json(cmd, env)
    if echo_stderr and not result.get("ok") and stderr and stderr.strip():
        sys.stderr.write(stderr)
    return result


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


def timed(what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = fn()
    status = "ok" if result.get("ok") else f"FAILED: {result.get('error')}"
    log(f"{what}: {status} ({time.perf_counter() - t0:.1f} s)")
    return result


# --- trials ---------------------------------------------------------------------


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


def with_trials(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The median result, carrying every trial for the JSON report."""
    return median_result(trials) | {"trials": trials}


# --- cells and tables -----------------------------------------------------------


def failure_label(result: dict[str, Any]) -> str:
    """What a failed result's cell shows."""
    return "timeout" if "timeout" in str(result.get("error")) else "error"


def ok_value(result: dict[str, Any], key: str) -> Any:
    """result[key]; LookupError("timeout" / "error") when the result failed."""
    if not result.get("ok"):
        raise LookupError(failure_label(result))
    return result[key]


def cell(result: dict[str, Any], key: str, fmt: str) -> str:
    if not result.get("ok"):
        return failure_label(result)
    return format(result[key], fmt)


def rows_by_column(
    rows: Sequence[tuple[str, Callable[..., str]]], columns: Sequence[Sequence[Any]]
) -> list[list[str]]:
    """[label, fn(*column) for each column] per row; a LookupError shows as its message."""
    out: list[list[str]] = []
    for label, fn in rows:
        row = [label]
        for args in columns:
            try:
                row.append(fn(*args))
            except LookupError as exc:
                row.append(str(exc.args[0]) if exc.args else "error")
        out.append(row)
    return out


def print_tables(
    tables: Sequence[tuple[str, list[str], list[list[str]]]],
    width: int = 110,
    plain_titles: bool = False,
) -> None:
    """(title, header, rows) tables with Rich, or as plain text where there is no Rich."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # the peers' venvs and bare interpreters have no rich
        for title, header, rows in tables:
            if plain_titles:
                print(title)
            print_plain(header, rows)
        return
    # Rich assumes 80 columns when piped (make bench | tee); wrap less there.
    console = Console(width=None if sys.stdout.isatty() else width)
    for title, header, rows in tables:
        table = Table(title=title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def print_plain(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        pairs = zip(row, widths, strict=True)
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(pairs)]
        print("  ".join(cells))


# --- command line and report ----------------------------------------------------


def bench_parser(
    doc: str | None,
    quick_help: str,
    trials_help: str = "override the number of trials",
    trials_default: int | None = None,
) -> argparse.ArgumentParser:
    """A parser with the options every bench script has: --quick, --trials, --json."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--trials", type=int, default=trials_default, help=trials_help)
    parser.add_argument("--json", type=Path, help="also write all results (every trial) here")
    return parser


def choose(
    parser: argparse.ArgumentParser, opt: str, value: str, allowed: Sequence[str]
) -> list[str]:
    """A comma list given to --opt, checked against `allowed` (a parser error if not)."""
    chosen = [x.strip() for x in value.split(",") if x.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        parser.error(f"--{opt}: unknown {unknown}; choose from {', '.join(allowed)}")
    return chosen


def trial_count(args: argparse.Namespace, full: int = 3) -> int:
    """--trials if given, else 1 with --quick, else `full`."""
    return int(args.trials or (1 if args.quick else full))


def load_text() -> str:
    """The 1, 5 and 15 minute load averages: how busy the shared machine was."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


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
        "load_average": os.getloadavg(),
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    log(f"wrote {path}")
