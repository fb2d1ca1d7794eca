"""The Postgres section of `bench/engine.py`: Keel and DBOS on one server, a floor, and
W3 with several Keel worker processes.

Keel (`KEEL_STORE=postgresql://...`, its Postgres store's defaults) and DBOS (its own
Postgres system database) run W1-W4 against the same server in the same run, each
workload in a fresh process with a fresh database of its own. Within a trial the
systems alternate workload by workload, so a change in the machine's load hits both
alike; ratios are read within one run. The floor is W1 with no engine: one psycopg
`INSERT` + `COMMIT` per step (`bench/peers/pg_floor.py`). W3 with 1, 2 and 4 worker
processes enqueues the runs first, then times from "go" to the last run's end
(`bench/peers/keel_w3_procs.py`).

Example:
    python bench/engine.py --store postgres --quick --workloads w1,w3_procs
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from _harness import (
    BENCH,
    communicate_json,
    failure_label,
    keel_env,
    keel_python,
    load_text,
    log,
    print_tables,
    timed,
    with_trials,
)
from _postgres import BenchServer, ServerError, bench_server, binaries_available, check_url
from _systems import FLOORS, PROCS_WORKLOAD, SYSTEMS, WORKLOADS, System, prepare, run_workload

__all__ = ["binaries_available", "check_url", "run"]

W1_FLOOR_TARGET = 1.5  # Keel's W1 within 1.5x of the floor (issue 14)
Results = dict[str, dict[str, dict[str, Any]]]  # system -> workload -> merged result
_FLOOR_ROWS = (
    ("floor_pool", "W1 floor via thread hop + pool checkout (ms)"),
    ("floor_autocommit", "W1 floor as one autocommit INSERT (ms)"),
)


@dataclass(frozen=True)
class Row:
    label: str
    workload: str
    key: str
    fmt: str
    higher_is_better: bool = False
    raced: bool = True  # "Keel ahead of DBOS" is a target for this row


ROWS = (
    Row("W1 overhead per durable step (ms)", "w1", "ms_per_step", ".3f"),
    Row("W1 stored bytes per step", "w1", "stored_bytes_per_step", ",.0f", raced=False),
    Row("W1 WAL bytes per step", "w1", "written_bytes_per_step", ",.0f", raced=False),
    Row("W2 fan-out 200 x 50 ms (s)", "w2_200", "seconds", ".3f"),
    Row("W2 fan-out 1,000 x 50 ms (s)", "w2_1000", "seconds", ".3f"),
    Row("W3 200 concurrent 5-step workflows (wf/s)", "w3", "wf_per_s", ",.0f", True),
    Row("W4 worker RSS per suspended run (KB)", "w4", "kb_per_suspended_run", ".1f"),
    Row("W4 time to suspend 1,000 runs (s)", "w4", "suspend_all_s", ".2f"),
    Row("W4 time to resume 1,000 runs (s)", "w4", "resume_all_s", ".2f"),
)


# --- running ------------------------------------------------------------------------


def run(args: argparse.Namespace, trials: int) -> dict[str, Any]:
    """Bench every chosen system on Postgres, print the tables, return the report."""
    if "langgraph" in args.only:
        log("langgraph: SQLite only (the issue compares it there); not in the Postgres section")
    systems = [SYSTEMS[n] for n in args.only if n in ("keel", "dbos")]
    workloads = [w for w in args.workloads if w in WORKLOADS]
    floors = list(FLOORS.values()) if "w1" in workloads else []
    ready = {s.name: prepare(s) for s in (*systems, *floors)}
    for name, (_, reason) in ready.items():
        if reason:
            log(f"{name}: {reason}")
    try:
        return _run_on(args, trials, systems, workloads, floors, ready)
    except ServerError as exc:
        log(f"Postgres section skipped: {exc}")
        return {"ok": False, "error": str(exc)}


def _run_on(
    args: argparse.Namespace,
    trials: int,
    systems: Sequence[System],
    workloads: Sequence[str],
    floors: Sequence[System],
    ready: dict[str, tuple[Path | None, str | None]],
) -> dict[str, Any]:
    with bench_server(args.pg, args.durable) as server:
        log(server.header())
        load_before = load_text()
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for t in range(trials):
            for workload in workloads:
                extra = floors if workload == "w1" else []
                for system in (*systems, *extra):
                    one = partial(_one, server, system, ready[system.name], workload, args.quick)
                    what = f"postgres {system.name} {workload} trial {t + 1}/{trials}"
                    raw.setdefault(system.name, {}).setdefault(workload, []).append(
                        timed(what, one)
                    )
        procs: dict[int, list[dict[str, Any]]] = {}
        if PROCS_WORKLOAD in args.workloads and "keel" in args.only:
            for t in range(trials):
                for n in args.procs:
                    what = f"postgres keel w3 with {n} worker processes, trial {t + 1}/{trials}"
                    procs.setdefault(n, []).append(
                        timed(what, partial(_procs, server, n, args.quick))
                    )
        load_after = load_text()
    results: Results = {
        name: {w: with_trials(runs) for w, runs in per.items()} for name, per in raw.items()
    }
    w3_procs = {n: with_trials(runs) for n, runs in procs.items()}
    print(f"\n{server.header()}")
    print(f"load average (1 / 5 / 15 min): {load_before} before, {load_after} after")
    tables = []
    if results:
        tables.append(_main_table(systems, results))
    if w3_procs:
        tables.append(_procs_table(w3_procs, server.owned))
    print_tables(tables)
    return {
        "server": server.settings,
        "server_owned": server.owned,
        "durable": args.durable,
        "load_average": {"before": load_before, "after": load_after},
        "results": results,
        "w3_procs": w3_procs,
    }


def _one(
    server: BenchServer,
    system: System,
    ready: tuple[Path | None, str | None],
    workload: str,
    quick: bool,
) -> dict[str, Any]:
    python, reason = ready
    if python is None:
        return {"ok": False, "error": reason}
    url = server.fresh_database(system.name)
    try:
        return run_workload(system, python, workload, quick, pg=url)
    finally:
        server.drop_database(url)


def _procs(server: BenchServer, n: int, quick: bool) -> dict[str, Any]:
    url = server.fresh_database(f"procs{n}")
    cmd = [str(keel_python()), str(BENCH / "peers" / "keel_w3_procs.py"), "--pg", url]
    cmd += ["--workers", str(n)]
    if server.pid is not None:
        cmd += ["--server-pid", str(server.pid)]
    if quick:
        cmd.append("--quick")
    try:
        result, _ = communicate_json(cmd, keel_env())
        return result
    finally:
        server.drop_database(url)


# --- tables -------------------------------------------------------------------------


def _get(results: Results, system: str, workload: str) -> dict[str, Any] | None:
    return results.get(system, {}).get(workload)


def _value(res: dict[str, Any] | None, key: str) -> float | None:
    return float(res[key]) if res and res.get("ok") else None


def _cell(res: dict[str, Any] | None, key: str, fmt: str) -> str:
    if res is None:
        return "-"
    if not res.get("ok"):
        return failure_label(res)
    return format(res[key], fmt)


def _ahead(row: Row, keel: float | None, dbos: float | None) -> tuple[str, str]:
    """(Keel's lead over DBOS as a factor, the target cell)."""
    if keel is None or dbos is None or keel <= 0 or dbos <= 0:
        return "", "ahead of DBOS" if row.raced else ""
    lead = keel / dbos if row.higher_is_better else dbos / keel
    if not row.raced:
        return f"{lead:.2f}x", ""
    return f"{lead:.2f}x", f"ahead of DBOS {'✓' if lead > 1 else '✗'}"


def _main_table(
    systems: Sequence[System], results: Results
) -> tuple[str, list[str], list[list[str]]]:
    names = [s.name for s in systems]
    header = ["metric", *(s.label for s in systems), "floor", "Keel lead", "Keel target"]
    rows = []
    for row in ROWS:
        if not any(_get(results, n, row.workload) for n in names):
            continue
        cells = [_cell(_get(results, n, row.workload), row.key, row.fmt) for n in names]
        floor = _get(results, "floor", row.workload)
        cells.append(_cell(floor, row.key, row.fmt) if floor else "")
        keel = _value(_get(results, "keel", row.workload), row.key)
        lead, target = _ahead(row, keel, _value(_get(results, "dbos", row.workload), row.key))
        if row.workload == "w1" and row.key == "ms_per_step":
            target = _floor_target(target, keel, _value(floor, row.key))
        rows.append([row.label, *cells, lead, target])
    for name, label in _FLOOR_ROWS:
        res = _get(results, name, "w1")
        if res:
            blank = [""] * len(names)
            rows.append([label, *blank, _cell(res, "ms_per_step", ".3f"), "", ""])
    return "Keel engine benchmark on Postgres (median of trials)", header, rows


def _floor_target(target: str, keel: float | None, floor: float | None) -> str:
    if keel is None or floor is None or floor <= 0:
        return f"{target}; ≤ {W1_FLOOR_TARGET:g}x floor".lstrip("; ")
    ratio = keel / floor
    mark = "✓" if ratio <= W1_FLOOR_TARGET else "✗"
    return f"{target}; {ratio:.2f}x floor (≤ {W1_FLOOR_TARGET:g}) {mark}".lstrip("; ")


def _procs_table(
    w3: dict[int, dict[str, Any]], server_owned: bool
) -> tuple[str, list[str], list[list[str]]]:
    base = _value(w3.get(min(w3)), "wf_per_s")
    rows = []
    for n, res in sorted(w3.items()):
        if not res.get("ok"):
            rows.append([str(n), failure_label(res), "", "", ""])
            continue
        speedup = f"{res['wf_per_s'] / base:.2f}x" if base else ""
        spread = "/".join(f"{r:.0f}" for r in res["runs_per_worker"])
        rows.append(
            [
                str(n),
                format(res["wf_per_s"], ",.0f"),
                speedup,
                spread,
                format(res["cores_busy"], ".2f"),
            ]
        )
    header = [
        "worker processes",
        "wf/s",
        f"vs {min(w3)}",
        "runs per worker",
        # Postgres's CPU is known only for the bench's own server (--pg: workers only).
        "cores busy (workers + Postgres)" if server_owned else "cores busy (workers)",
    ]
    return "W3 on Postgres: 200 runs enqueued, then N Keel worker processes", header, rows
