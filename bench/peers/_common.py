"""Measurement loop shared by every system's workload script.

Each system (Keel, LangGraph, DBOS, Keel on Temporal, raw temporalio) implements
the small `Adapter` protocol below; the timing and memory logic lives here once, so
every system is measured the same way. This module runs inside each peer's own venv, so it
uses the standard library only (no psutil, no rich).

Protocol with the harness (`bench/engine.py`): the script is run as
`python <system>_workloads.py WORKLOAD --dir TMPDIR [--quick] [--pg URL]` in a
fresh process and prints exactly one JSON object on its last stdout line. With
`--pg`, the system keeps its store in that (empty) Postgres database instead of
an SQLite file in TMPDIR; psycopg is then imported lazily to measure it (Keel's
and DBOS's venvs both have it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

W1_STEPS = 20
W1_BLOB = "x" * 1000  # ~1 KB of state carried by every W1 run
W3_STEPS = 5
NAP_S = 0.05  # per-item sleep in W2: the ideal fan-out wall time
SIGNAL_PAYLOAD = "ok"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; --quick shrinks the repetition counts, never the shapes."""

    w1_warmup: int
    w1_runs: int
    w3_workflows: int
    w4_runs: int

    @classmethod
    def for_mode(cls, quick: bool, small: bool = False) -> Sizes:
        if small:  # the Temporal section: a dev server here runs ~20 activities a second
            if quick:
                return cls(w1_warmup=1, w1_runs=5, w3_workflows=50, w4_runs=100)
            return cls(w1_warmup=2, w1_runs=20, w3_workflows=100, w4_runs=200)
        if quick:
            return cls(w1_warmup=3, w1_runs=20, w3_workflows=200, w4_runs=1000)
        return cls(w1_warmup=3, w1_runs=50, w3_workflows=200, w4_runs=1000)


class Adapter(Protocol):
    """What a system must provide; each method runs real durable workflows."""

    async def open(self, workdir: Path, pg: str | None = None) -> None:
        """Create the store (an SQLite file inside `workdir`, or the empty Postgres
        database at URL `pg`) and start the runtime."""

    async def close(self) -> None: ...

    async def w1(self) -> None:
        """Run one workflow of W1_STEPS no-op durable steps with W1_BLOB as state."""

    async def w2(self, n: int) -> int:
        """Fan out `n` durable steps that each sleep NAP_S, gather, return the sum."""

    async def w3(self) -> None:
        """Run one workflow of W3_STEPS no-op durable steps (many run concurrently)."""

    async def w4_start(self, i: int) -> Any:
        """Start run `i`, which waits for an external signal; return a handle."""

    async def w4_wait_suspended(self, handles: Sequence[Any]) -> None:
        """Return once every run is durably suspended waiting for its signal."""

    async def w4_resume(self, handle: Any) -> None:
        """Send the signal (payload SIGNAL_PAYLOAD) and wait until that run completes."""


# --- process-level probes ---------------------------------------------------


def rss_kb() -> int:
    """Resident set size of this process, from /proc (no psutil in the peer venvs)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def settled_rss_kb() -> int:
    """RSS after a full collection, so garbage waiting for GC is not counted."""
    gc.collect()
    return rss_kb()


def bytes_written() -> int:
    """Bytes this process passed to write(2) so far: WAL, journal and DB pages.

    `wchar` counts at the syscall level, so it is independent of page-cache
    writeback timing, and includes SQLite's rollback journal or WAL traffic
    plus checkpoints that happen inside the process.
    """
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("wchar not found in /proc/self/io")


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_cpu_seconds(parent: int) -> float:
    """CPU time so far of the live children of `parent` (a postmaster's backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return total


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def checkpoint_all(workdir: Path) -> None:
    """Fold every WAL back into its DB file so file sizes measure what is stored."""
    for path in sorted(workdir.rglob("*")):
        if path.is_file() and _is_sqlite(path):
            conn = sqlite3.connect(path, timeout=30)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.close()


def stored_bytes(workdir: Path) -> int:
    """Size of everything the system keeps on disk (DB, WAL, journal, blobs).

    The -shm file is excluded: it is a shared-memory index, not stored data.
    """
    return sum(
        p.stat().st_size for p in workdir.rglob("*") if p.is_file() and not p.name.endswith("-shm")
    )


def sqlite_journal_modes(workdir: Path) -> dict[str, str]:
    """journal_mode of each DB file, read back so the README states what ran."""
    modes: dict[str, str] = {}
    for path in sorted(workdir.rglob("*")):
        if path.is_file() and _is_sqlite(path):
            conn = sqlite3.connect(path, timeout=30)
            try:
                modes[path.name] = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
            finally:
                conn.close()
    return modes


class Disk(Protocol):
    """Where a system's store lives: what it keeps, and what it wrote, in bytes."""

    def stored(self) -> int: ...

    def written(self) -> int: ...

    def describe(self) -> dict[str, Any]: ...


class SqliteDisk:
    """SQLite files under the workload's temp dir; writes are this process's write(2)s."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def stored(self) -> int:
        checkpoint_all(self.workdir)
        return stored_bytes(self.workdir)

    def written(self) -> int:
        return bytes_written()

    def describe(self) -> dict[str, Any]:
        return {"journal_modes": sqlite_journal_modes(self.workdir)}


class PgDisk:
    """One Postgres database: its size on disk, and the server's WAL position.

    The server writes for the client, so `written` is WAL bytes generated (the server
    runs one workload at a time: the whole WAL growth is this workload's).
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def _one(self, sql: str) -> Any:
        import psycopg  # only the Postgres runs need it; every venv has it then

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]

    def stored(self) -> int:
        return int(self._one("SELECT pg_database_size(current_database())"))

    def written(self) -> int:
        return int(self._one("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))

    def describe(self) -> dict[str, Any]:
        return {"server_version": str(self._one("SHOW server_version"))}


def disk_for(workdir: Path, pg: str | None) -> Disk:
    return PgDisk(pg) if pg else SqliteDisk(workdir)


# --- the workloads ----------------------------------------------------------


async def measure_w1(adapter: Adapter, disk: Disk, sizes: Sizes) -> dict[str, Any]:
    """Sequential no-op steps: per-step latency and per-step disk cost."""
    for _ in range(sizes.w1_warmup):
        await adapter.w1()
    size0, written0 = disk.stored(), disk.written()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(sizes.w1_runs):
        await adapter.w1()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0  # this process, all threads: its own layer
    written = disk.written() - written0  # read before SQLite's checkpoint writes
    steps = sizes.w1_runs * W1_STEPS
    return {
        "runs": sizes.w1_runs,
        "steps": steps,
        "ms_per_step": elapsed * 1000 / steps,
        "cpu_ms_per_step": cpu * 1000 / steps,
        "stored_bytes_per_step": (disk.stored() - size0) / steps,
        "written_bytes_per_step": written / steps,
        **disk.describe(),
    }


async def measure_w2(adapter: Adapter, n: int) -> dict[str, Any]:
    """Scatter-gather of n 50 ms steps: wall time against the 50 ms ideal."""
    await adapter.w2(4)  # warm up lazy imports and the connection pool
    t0 = time.perf_counter()
    total = await adapter.w2(n)
    elapsed = time.perf_counter() - t0
    if total != n * (n - 1) // 2:
        raise AssertionError(f"w2 returned {total}, expected {n * (n - 1) // 2}")
    return {"n": n, "seconds": elapsed, "x_ideal": elapsed / NAP_S}


async def measure_w3(adapter: Adapter, sizes: Sizes) -> dict[str, Any]:
    """Many small concurrent workflows: throughput in workflows per second."""
    await adapter.w3()  # warm-up run, not timed
    t0 = time.perf_counter()
    await asyncio.gather(*(adapter.w3() for _ in range(sizes.w3_workflows)))
    elapsed = time.perf_counter() - t0
    return {
        "workflows": sizes.w3_workflows,
        "seconds": elapsed,
        "wf_per_s": sizes.w3_workflows / elapsed,
    }


async def measure_w4(adapter: Adapter, sizes: Sizes) -> dict[str, Any]:
    """Runs parked on a signal: worker memory per parked run, then mass resume."""
    # One full cycle first so lazily-built machinery is not billed to the runs.
    warm = await adapter.w4_start(-1)
    await adapter.w4_wait_suspended([warm])
    await adapter.w4_resume(warm)

    rss0 = settled_rss_kb()
    t0 = time.perf_counter()
    handles = list(await asyncio.gather(*(adapter.w4_start(i) for i in range(sizes.w4_runs))))
    await adapter.w4_wait_suspended(handles)
    suspend_s = time.perf_counter() - t0
    rss1 = settled_rss_kb()

    t1 = time.perf_counter()
    await asyncio.gather(*(adapter.w4_resume(h) for h in handles))
    resume_s = time.perf_counter() - t1
    return {
        "runs": sizes.w4_runs,
        "suspend_all_s": suspend_s,
        "rss_before_kb": rss0,
        "rss_suspended_kb": rss1,
        "kb_per_suspended_run": (rss1 - rss0) / sizes.w4_runs,
        "resume_all_s": resume_s,
    }


# --- entry point ------------------------------------------------------------

WORKLOADS = ("w1", "w2_200", "w2_1000", "w3", "w4")


async def _run(
    adapter: Adapter,
    workload: str,
    workdir: Path,
    pg: str | None,
    sizes: Sizes,
    make_disk: Callable[[Path, str | None], Disk] = disk_for,
) -> dict[str, Any]:
    await adapter.open(workdir, pg)
    try:
        if workload == "w1":
            return await measure_w1(adapter, make_disk(workdir, pg), sizes)
        if workload.startswith("w2_"):
            return await measure_w2(adapter, int(workload.removeprefix("w2_")))
        if workload == "w3":
            return await measure_w3(adapter, sizes)
        if workload == "w4":
            return await measure_w4(adapter, sizes)
        raise ValueError(f"unknown workload {workload!r}; choose from {WORKLOADS}")
    finally:
        await adapter.close()


def main(
    system: str,
    make_adapter: Callable[..., Adapter],
    versions: Callable[[], dict[str, str]],
    workloads: Sequence[str] = WORKLOADS,
    *,
    flags: Sequence[str] = (),
    make_disk: Callable[[Path, str | None], Disk] = disk_for,
) -> None:
    """Parse argv, run one workload, print one JSON line (see run_reported).

    Each of `flags` is a `--flag` option, passed to `make_adapter` by keyword (a
    system's variants: `--local` for Temporal's local activities); `make_disk`
    measures where the system keeps its store (a Temporal server's own files).
    """
    parser = argparse.ArgumentParser(description=f"{system} workloads for bench/engine.py")
    parser.add_argument("workload", choices=workloads)
    parser.add_argument("--dir", type=Path, required=True, help="empty temp dir for the store")
    parser.add_argument("--pg", help="an empty Postgres database (URL) to use instead of SQLite")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--small", action="store_true", help="Sizes for the Temporal section")
    for flag in flags:
        parser.add_argument(f"--{flag}", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"system": system, "workload": args.workload}
    out["store"] = "postgres" if args.pg else "sqlite"

    def run() -> dict[str, Any]:
        out["versions"] = versions()
        sizes = Sizes.for_mode(args.quick, args.small)
        adapter = make_adapter(**{flag: getattr(args, flag) for flag in flags})
        run = _run(adapter, args.workload, args.dir, args.pg, sizes, make_disk)
        return asyncio.run(run)

    run_reported(out, run)


def run_reported(out: dict[str, Any], run: Callable[[], dict[str, Any]]) -> None:
    """Add run()'s result to `out` and print it as one JSON line; never raise past here.

    A failure is reported as {"ok": false, "error": ...} so the harness can
    show "error" for this cell and carry on with the rest of the bench. Every
    bench child process (the peers' workloads and the scripts' workers) ends here.
    """
    try:
        out.update(run())
        out["ok"] = True
    except BaseException as exc:  # report, don't crash: the harness keeps going
        out["ok"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    print(json.dumps(out), flush=True)
    sys.stdout.flush()
