"""What a SQL layer costs on Keel's hot path: one journaled step's commit on SQLite.

Issue 13 asked for one backend-neutral SQL layer with dialects on the side, SQLAlchemy
Core being the ecosystem default, "a thin layer of your own is acceptable if the bench
shows it is needed". This measures the same unit of work (lease check, step upsert, run
touch, commit) through raw sqlite3 and through SQLAlchemy Core (text() and constructs),
interleaved in one process, and sets the difference against Keel's whole step (W1 of
bench/engine.py, measured in the same run).

    python bench/sql_layer.py            # 3 trials
    python bench/sql_layer.py --quick    # 1 trial

SQLAlchemy is installed, pinned, in bench/.venvs/sqlalchemy (never in Keel's venv).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    BENCH,
    bench_parser,
    keel_env,
    keel_python,
    log,
    machine_info,
    median_result,
    print_tables,
    run_json_child,
    trial_count,
    write_report,
)
from engine import System, ensure_venv

SQLALCHEMY = System(
    "sqlalchemy", "SQLAlchemy", "", "import sqlalchemy", pins={"sqlalchemy": "2.0.45"}
)
CHILD = BENCH / "peers" / "sql_layer_child.py"
VARIANTS = ("raw sqlite3", "SQLAlchemy text()", "SQLAlchemy Core")


def _w1(trials: int) -> float | None:
    """Keel's ms per step (W1), in this run, for scale."""
    cmd = [str(keel_python()), str(BENCH / "peers" / "keel_workloads.py"), "w1"]
    runs = []
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run_json_child([*cmd, "--dir", tmp], keel_env()))
    best = median_result(runs)
    return best.get("ms_per_step") if best.get("ok") else None


def main() -> None:
    args = bench_parser(__doc__, "1 trial").parse_args()
    trials = trial_count(args)
    python = ensure_venv(SQLALCHEMY)
    results = []
    for t in range(trials):
        log(f"trial {t + 1}/{trials}")
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run_json_child([str(python), str(CHILD), "--dir", tmp], {}))
    good = [r for r in results if r.get("ok")]
    if not good:
        sys.exit(f"every trial failed: {results[-1]}")
    per = {v: sorted(r["us_per_commit"][v] for r in good)[len(good) // 2] for v in VARIANTS}
    w1 = _w1(trials)
    raw = per["raw sqlite3"]
    rows = []
    for v in VARIANTS:
        extra = per[v] - raw
        of_step = f"{extra / (w1 * 1000) * 100:+.0f}%" if w1 else "n/a"
        rows.append([v, f"{per[v]:.1f}", f"{per[v] / raw:.2f}x", f"{extra:+.1f}", of_step])
    print_tables(
        [
            (
                f"One step commit on SQLite (median of {trials}; Keel W1 = {w1:.3f} ms/step)"
                if w1
                else "One step commit on SQLite",
                ["layer", "µs/commit", "vs raw", "µs added", "added / Keel step"],
                rows,
            )
        ]
    )
    print(f"versions: {good[-1]['versions']}  machine: {machine_info()}")
    if args.json:
        write_report(args.json, {"trials": results, "w1_ms_per_step": w1})


if __name__ == "__main__":
    main()
