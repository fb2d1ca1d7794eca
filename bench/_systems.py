"""The systems the engine bench compares, their interpreters, and one workload run.

Each peer is installed at a pinned version in its own venv under
`bench/.venvs/<peer>` (created on first use, reused while the versions match);
Keel (and the Postgres floor) run from the repo's `.venv`. Shared by
`bench/engine.py` (the SQLite section) and `bench/_pg_section.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import BENCH, REPO, TIMEOUT_S, communicate_json, keel_env, keel_python, log

VENVS = BENCH / ".venvs"
WORKLOADS = ("w1", "w2_200", "w2_1000", "w3", "w4")
PROCS_WORKLOAD = "w3_procs"  # W3 with N worker processes: Postgres only
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
    args: tuple[str, ...] = ()  # more arguments for its script


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


def run_workload(
    system: System, python: Path, workload: str, quick: bool, pg: str | None = None
) -> dict[str, Any]:
    """One workload in a fresh process and fresh temp dir (or Postgres database `pg`);
    never raises."""
    with tempfile.TemporaryDirectory(prefix=f"keel-bench-{system.name}-{workload}-") as tmp:
        script = str(BENCH / "peers" / system.script)
        cmd = [str(python), script, workload, "--dir", tmp, *system.args]
        if pg:
            cmd += ["--pg", pg]
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


def import_result(system: System, python: Path) -> dict[str, Any]:
    """import_seconds as a result cell (an error cell when the timing fails)."""
    try:
        return {"ok": True, "seconds": import_seconds(system, python)}
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"ok": False, "error": f"import timing failed: {exc}"}


# The Postgres floor for W1 (bench/peers/pg_floor.py), on the repo's interpreter:
# `floor` is the floor itself; the others show what a thread hop + pool checkout
# add to it, and what one round trip per step would cost.
FLOORS: dict[str, System] = {
    s.name: s
    for s in (
        System("floor", "floor", "pg_floor.py", "import psycopg", venv=False),
        System(
            "floor_pool",
            "floor, via pool",
            "pg_floor.py",
            "import psycopg_pool",
            venv=False,
            args=("--variant", "pool"),
        ),
        System(
            "floor_autocommit",
            "floor, one autocommit INSERT",
            "pg_floor.py",
            "import psycopg",
            venv=False,
            args=("--variant", "autocommit"),
        ),
    )
}
