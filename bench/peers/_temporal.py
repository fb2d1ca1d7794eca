"""What both Temporal systems of the engine bench share (Keel's backend and raw temporalio).

Runs in the repo's venv (temporalio is there). The harness (bench/_temporal_systems.py)
starts ONE Temporal dev server for the whole bench and tells each workload process
where it is through the environment:

- `KEEL_BENCH_TEMPORAL`: the server's `host:port`;
- `KEEL_BENCH_TEMPORAL_DB`: its SQLite file (what it stores, for W1's bytes);
- `KEEL_BENCH_TEMPORAL_PID`: its process (what it writes, for W1's bytes).

`KEEL_BENCH_SANDBOX=off` runs both systems' workflows outside Temporal's sandbox (by
default both run in it, as each does out of the box).

Each workload process runs its own worker on a task queue of its own.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import bytes_written

ADDRESS_ENV = "KEEL_BENCH_TEMPORAL"
DB_ENV = "KEEL_BENCH_TEMPORAL_DB"
SANDBOX_ENV = "KEEL_BENCH_SANDBOX"
PID_ENV = "KEEL_BENCH_TEMPORAL_PID"
POLL_S = 0.02  # W4: how often to re-check runs that are not parked yet (as Keel's side)
PARK_TIMEOUT_S = 90.0  # W4: fail with a diagnosis before the harness's kill
DESCRIBE_AT_ONCE = 100  # W4: concurrent describe calls while polling


def address() -> str:
    """The dev server's address, set by the harness (a clear error when run alone)."""
    found = os.environ.get(ADDRESS_ENV)
    if not found:
        raise RuntimeError(
            f"{ADDRESS_ENV} is not set: run this through `python bench/engine.py --only "
            "keel-temporal,temporal`, or start `temporal server start-dev` and set it to "
            "its host:port"
        )
    return found


def sandboxed() -> bool:
    """Whether workflows run in Temporal's sandbox (both systems' default; `off`: not)."""
    value = os.environ.get(SANDBOX_ENV, "on")
    if value not in ("on", "off"):
        raise RuntimeError(f"{SANDBOX_ENV} is {value!r}: use on or off")
    return value == "on"


def task_queue(system: str) -> str:
    """A task queue of this process's own: no other workload's worker polls it."""
    return f"bench-{system}-{uuid.uuid4().hex[:8]}"


def _server_wchar(pid: str) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError(f"wchar not found in /proc/{pid}/io")


class ServerDisk:
    """The Temporal server's SQLite file (plus its WAL/journal) and the server's
    write(2) bytes, plus this worker's own: Temporal stores a run's history for it, as
    Postgres does for a Keel worker (bench/peers/_common.py's PgDisk). The harness runs
    one workload at a time, so the server's growth meanwhile is this workload's; its
    completed runs stay stored for the namespace's retention (a day on the dev server)."""

    def __init__(self, workdir: Path, pg: str | None = None) -> None:
        self.db = Path(os.environ.get(DB_ENV, ""))
        self.pid = os.environ.get(PID_ENV, "")

    def stored(self) -> int:
        """Bytes in the server's pages in use: its file only grows (freed pages are
        reused), so the file size would be page-allocation noise over a few KB a step."""
        try:
            conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
            try:
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                free = conn.execute("PRAGMA freelist_count").fetchone()[0]
                size = conn.execute("PRAGMA page_size").fetchone()[0]
            finally:
                conn.close()
            return int((pages - free) * size)
        except sqlite3.Error:  # the server holds it locked: its files' sizes instead
            files = [self.db, *(self.db.with_name(self.db.name + s) for s in ("-wal", "-journal"))]
            return sum(f.stat().st_size for f in files if f.is_file())

    def written(self) -> int:
        server = _server_wchar(self.pid) if self.pid else 0
        return server + bytes_written()

    def describe(self) -> dict[str, Any]:
        try:
            conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
            try:
                mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
            finally:
                conn.close()
        except sqlite3.Error as exc:
            mode = f"unknown ({exc})"
        return {"server_journal_mode": mode, "server_writes_counted": bool(self.pid)}


async def parked(client: Any, run_id: str) -> bool:
    """Whether the run's first workflow task is done and nothing is pending: it is
    durably waiting (for its signal), as Keel's engine's WAITING status means."""
    desc = await client.get_workflow_handle(run_id).describe()
    if desc.status is None or desc.status.name != "RUNNING":
        raise AssertionError(f"W4 run {run_id} is {desc.status} before its signal")
    raw = desc.raw_description
    return desc.history_length >= 4 and not raw.HasField("pending_workflow_task")


async def wait_parked(client: Any, run_ids: Sequence[str]) -> None:
    """Return once every run is parked; poll the ones that are not, every POLL_S."""
    pending = list(run_ids)
    gate = asyncio.Semaphore(DESCRIBE_AT_ONCE)
    deadline = time.monotonic() + PARK_TIMEOUT_S

    async def check(rid: str) -> bool:
        async with gate:
            return await parked(client, rid)

    while pending:
        done = await asyncio.gather(*(check(r) for r in pending))
        pending = [r for r, ok in zip(pending, done, strict=True) if not ok]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} W4 runs not parked after {PARK_TIMEOUT_S:g} s")
        await asyncio.sleep(POLL_S)
