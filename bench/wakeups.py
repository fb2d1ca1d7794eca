"""Wake-ups across processes: decision -> resumed latency, and idle claim queries.

    python bench/wakeups.py [--quick] [--only postgres,sqlite] [--json out.json]

Per backend (Postgres: a throwaway server from tests/services/postgres.py
`start_server()`; SQLite: a temp-dir file) and per mode, on a fresh store:

1. 3 worker processes start (`python bench/wakeups.py --worker`, the
   `tests.apps.wake_app` workflow: `ctx.wait_for("go")`, then one step);
2. idle: the claim queries each worker runs in IDLE seconds with nothing to do;
3. 1,000 runs are started from this process and parked (WAITING for "go");
4. idle again, with the 1,000 runs waiting;
5. DECISIONS of them get their signal from this process, one every GAP seconds,
   and every one must finish.

Resumed: a worker's claim of the run returned (the run left WAITING on some
worker). Latency: from just before this process called `app.signal` (the
decision's write, another process than every worker) to that claim, both on
this host's clock. p50 / p99 over the decisions.

Modes: `feed` is Keel now (Postgres LISTEN/NOTIFY, SQLite `PRAGMA
data_version`; safety poll every `listen_poll` s, backoff to `poll_max` without
a live feed); `poll` is the behaviour before it: no feed, a claim query every
0.1 s (poll_interval = poll_max = 0.1), for comparison.
See bench/README.md, "Wake-ups".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORKERS = 3
RESUMED = (
    "resumed = a worker's claim of the run returned (it left WAITING), timed from just"
    " before another process called app.signal"
)


# -- the worker process --------------------------------------------------------------


async def _worker(url: str, mode: str, out: Path, ready: Path) -> None:
    """Serve wake_app's runs; on SIGTERM write what the store was asked, and when."""
    from tests.apps.wake_app import build

    app = build(url)
    store = app.store
    if mode == "poll":
        store.wake_feed = lambda: None  # type: ignore[method-assign]
    calls: dict[str, list[float]] = {"claim": [], "next_due": []}
    claimed: list[tuple[str, float]] = []
    claim, next_due = store.claim, store.next_due

    async def counted_claim(*args: Any, **kwargs: Any) -> Any:
        calls["claim"].append(time.time())
        got = await claim(*args, **kwargs)
        at = time.time()
        claimed.extend((c.run.id, at) for c in got)
        return got

    async def counted_due(*args: Any, **kwargs: Any) -> Any:
        calls["next_due"].append(time.time())
        return await next_due(*args, **kwargs)

    store.claim = counted_claim  # type: ignore[method-assign]
    store.next_due = counted_due  # type: ignore[method-assign]
    me = asyncio.current_task()
    assert me is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, me.cancel)
    worker = app.worker()
    try:
        await worker.start()
        ready.touch()
        await worker.serve()
    except asyncio.CancelledError:
        pass
    finally:
        await worker.stop()
        out.write_text(json.dumps({"calls": calls, "claimed": claimed}))
        await app.close()


# -- the measuring process -----------------------------------------------------------


def _spawn(url: str, mode: str, root: Path, n: int) -> tuple[subprocess.Popen[bytes], Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["KEEL_TRACING"] = "false"
    if mode == "poll":
        env.update(KEEL_POLL_INTERVAL="0.1", KEEL_POLL_MAX="0.1")
    out, ready = root / f"worker-{n}.json", root / f"worker-{n}.ready"
    cmd = [sys.executable, __file__, "--worker", url, mode, str(out), str(ready)]
    err = open(root / f"worker-{n}.stderr", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=err)
    return proc, out


async def _until(what: str, pred: Any, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def _rate(times: list[float], start: float, end: float) -> float:
    return sum(1 for t in times if start <= t < end) / (end - start)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(url: str, mode: str, runs: int, decisions: int, idle: float) -> dict[str, Any]:
    from keel.store import RunFilter
    from keel.types import RunStatus
    from tests.apps.wake_app import build

    root = Path(tempfile.mkdtemp(prefix="keel-wake-"))
    procs = [_spawn(url, mode, root, n) for n in range(WORKERS)]
    app = build(url)
    load = [os.getloadavg()[0]]
    try:
        for n in range(WORKERS):
            ready = root / f"worker-{n}.ready"

            async def started(path: Path = ready) -> bool:
                return path.exists()

            await _until(f"worker {n} to start", started, 120)
        idle0 = time.time()
        await asyncio.sleep(idle)
        idle1 = time.time()
        ids = [f"w{i:05d}" for i in range(runs)]
        for run_id in ids:
            await app.start("waits", {}, id=run_id, execute=False)

        async def parked() -> bool:
            flt = RunFilter(status=RunStatus.WAITING, limit=runs + 1)
            return len(await app.store.list_runs(flt)) == runs

        await _until(f"{runs} runs parked", parked)
        load.append(os.getloadavg()[0])
        idle2 = time.time()
        await asyncio.sleep(idle)
        idle3 = time.time()
        sent: dict[str, float] = {}
        for run_id in ids[:decisions]:
            sent[run_id] = time.time()
            await app.signal(run_id, "go", 1)
            await asyncio.sleep(0.02)

        async def finished() -> bool:
            flt = RunFilter(status=RunStatus.SUCCEEDED, limit=runs + 1)
            return len(await app.store.list_runs(flt)) == decisions

        await _until(f"{decisions} runs resumed", finished)
        load.append(os.getloadavg()[0])
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            proc.wait(timeout=120)
        await app.close()
    dumps = [json.loads(out.read_text()) for _, out in procs]
    shutil.rmtree(root, ignore_errors=True)
    resumed: dict[str, float] = {}
    for d in dumps:
        for run_id, at in d["claimed"]:
            if run_id in sent and at >= sent[run_id]:
                resumed[run_id] = min(at, resumed.get(run_id, at))
    lat = [resumed[r] - sent[r] for r in sent]
    claims_idle = [_rate(d["calls"]["claim"], idle0, idle1) for d in dumps]
    claims_parked = [_rate(d["calls"]["claim"], idle2, idle3) for d in dumps]
    dues = [_rate(d["calls"]["next_due"], idle2, idle3) for d in dumps]
    return {
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": _pct(lat, 0.99) * 1000,
        "max_ms": max(lat) * 1000,
        "claims_per_s_idle": statistics.mean(claims_idle),
        "claims_per_s_parked": statistics.mean(claims_parked),
        "next_due_per_s_parked": statistics.mean(dues),
        "load": load,
        "latencies_ms": [round(x * 1000, 2) for x in lat],  # in decision order
    }


def _postgres() -> tuple[str, Any] | None:
    try:
        import psycopg

        from tests.services.postgres import start_server
    except ImportError as exc:
        print(f"[bench] Postgres skipped: {exc} (pip install 'keel[postgres]')", file=sys.stderr)
        return None
    srv = start_server()
    with psycopg.connect(srv.url(), autocommit=True) as conn:
        for mode in ("feed", "poll"):
            conn.execute(f"CREATE DATABASE wake_{mode}")
    return srv.url("wake_{mode}"), srv


async def _main(args: argparse.Namespace) -> None:
    backends = args.only.split(",")
    runs, decisions, idle = (200, 50, 3.0) if args.quick else (1000, 300, 6.0)
    print(f"[bench] load average at start: {os.getloadavg()}", file=sys.stderr)
    results: dict[str, dict[str, Any]] = {}
    srv = None
    try:
        for backend in backends:
            if backend == "postgres":
                found = _postgres()
                if found is None:
                    continue
                template, srv = found
            for mode in ("feed", "poll"):
                if backend == "postgres":
                    url = template.replace("{mode}", mode)
                else:
                    scratch = tempfile.mkdtemp(prefix="keel-wake-")
                    url = f"sqlite:///{scratch}/keel.db"
                print(f"[bench] {backend} {mode} ...", file=sys.stderr, flush=True)
                results[f"{backend} {mode}"] = await _measure(url, mode, runs, decisions, idle)
                if backend != "postgres":
                    shutil.rmtree(scratch, ignore_errors=True)
    finally:
        if srv is not None:
            from tests.services.postgres import stop_server

            stop_server(srv)
    _table(results, runs, decisions)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def _table(results: dict[str, dict[str, Any]], runs: int, decisions: int) -> None:
    print(f"\nWake-ups: {WORKERS} worker processes, {runs} runs waiting, {decisions} decisions")
    print(f"({RESUMED})\n")
    head = ["store / mode", "p50 ms", "p99 ms", "max ms", "claims/s idle", "claims/s parked",
            "next_due/s", "load (start, parked, end)"]  # fmt: skip
    rows = [
        [
            name,
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['max_ms']:.1f}",
            f"{r['claims_per_s_idle']:.2f}",
            f"{r['claims_per_s_parked']:.2f}",
            f"{r['next_due_per_s_parked']:.2f}",
            ", ".join(f"{x:.2f}" for x in r["load"]),
        ]
        for name, r in results.items()
    ]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(row, widths, strict=True))))  # fmt: skip
    print(
        f"\nclaims/s: claim queries per worker per second (idle: no runs; parked: {runs}"
        f" waiting, no decisions); next_due/s: timer look-ups per worker per second while"
        f" parked; load: os.getloadavg() 1-minute at start, parked, end ({os.cpu_count()}"
        " cores)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, mode, out, ready = sys.argv[2:6]
        asyncio.run(_worker(url, mode, Path(out), Path(ready)))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 runs, 50 decisions")
    parser.add_argument("--only", default="postgres,sqlite", help="postgres,sqlite")
    parser.add_argument("--json", help="write the results here")
    asyncio.run(_main(parser.parse_args()))
