"""Real `keel worker` processes on one store, for the store-fault tests.

A `Fleet` enqueues runs of tests/apps/faults_app.py, starts workers (each with its
stderr in a file), waits until the runs settle, and checks what a store fault must
never do: fail or lose a run, apply an effect twice, log more than one line per
episode, or print a traceback.

Example:
    fleet = Fleet(tmp_path, url)
    fleet.enqueue("chain", 6, n=40)
    fleet.workers(2)
    ...  # break the store, mend it
    fleet.settle()
    fleet.check(episodes=1)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.limits import WAIT

APP = str(Path(__file__).parent / "apps" / "faults_app.py")
_ROOT = str(Path(__file__).parent.parent)
# A workflow's step keys, less the item number (tests/apps/faults_app.py).
_STEP = {"chain": "work#", "fan": "map:work#0/", "embedded": "work#"}


def until(check: Callable[[], bool], what: str, limit: float = WAIT) -> None:
    """Wait until `check()` holds (polling), or fail naming `what`."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def statuses(url: str) -> dict[str, str]:
    """Every run's status, read straight from the store's `runs` table."""
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=WAIT)
        with contextlib.closing(db):
            return dict(db.execute("SELECT id, status FROM runs").fetchall())
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return dict(conn.execute("SELECT id, status FROM runs").fetchall())  # type: ignore[arg-type]


class Fleet:
    """Runs, workers and their logs in `tmp`, on the store at `url`."""

    def __init__(self, tmp: Path, url: str, lease: float = 3.0) -> None:
        self.tmp, self.url = tmp, url
        (tmp / "effects").mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "KEEL_STORE": url,
            "KEEL_TEST_DIR": str(tmp),
            "KEEL_POLL_INTERVAL": "0.05",
            "KEEL_TRACING": "false",
            "KEEL_LEASE_SECONDS": str(lease),  # a heartbeat every lease/3 s
            "PYTHONPATH": os.pathsep.join([_ROOT, os.environ.get("PYTHONPATH", "")]),
        }
        self.steps: dict[str, int] = {}  # run id -> steps it makes
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def keel(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "keel.cli", *args],
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )

    def enqueue(self, workflow: str, count: int, n: int) -> None:
        """`count` detached runs of `workflow` with `n` steps each (ids `<workflow><i>`)."""
        for i in range(count):
            run_id = f"{workflow}{i}"
            res = self.keel(
                "run", f"{APP}:{workflow}", "--detach", "--id", run_id,
                "--input", json.dumps({"n": n}),
            )  # fmt: skip
            assert res.returncode == 0, res.stderr
            self.steps[run_id] = n

    def spawn(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        """A `keel ...` process whose stderr (and stdout) go to `<name>.err`."""
        log = self.tmp / f"{name}.err"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "keel.cli", *args],
                env=self.env,
                cwd=self.tmp,
                stdout=err,
                stderr=err,
            )
        self.procs.append((proc, log))
        return proc

    def workers(self, count: int, *args: str) -> None:
        for i in range(count):
            self.spawn("worker", APP, *args, name=f"worker{i}")

    def busy(self) -> int:
        """How many processes have run a step."""
        log = self.tmp / "exec.log"
        return len({ln.split()[1] for ln in log.read_text().splitlines()}) if log.exists() else 0

    def executions(self) -> list[str]:
        """Step keys in the order their code started (re-runs included)."""
        log = self.tmp / "exec.log"
        return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []

    def settle(self, limit: float = WAIT) -> dict[str, str]:
        """Wait until every run has ended; its statuses."""
        seen: dict[str, str] = {}

        def ended() -> bool:
            nonlocal seen
            with contextlib.suppress(Exception):  # the store may be coming back
                seen = statuses(self.url)
            return bool(seen) and all(s in ("SUCCEEDED", "FAILED") for s in seen.values())

        until(ended, f"every run to end (now {seen})", limit)
        return seen

    def stop(self) -> list[str]:
        """SIGTERM every process (workers drain and exit 0); their logs."""
        logs = []
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, log in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=WAIT)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            logs.append(log.read_text())
        self.procs = []
        return logs

    def check(self, *, episodes: int | None, in_flight: int) -> dict[str, Any]:
        """Stop the workers and assert: every run SUCCEEDED, none lost; each step's effect
        applied exactly once; at most `in_flight` re-executions per episode; per worker
        `episodes` "paused" and as many "resumed" lines (None: at most one pair: a blip
        the store retries absorb makes none); no traceback. Returns counts."""
        logs = self.stop()
        got = statuses(self.url)
        assert set(self.steps) <= set(got), f"runs lost: {set(self.steps) - set(got)}"
        assert {r: got[r] for r in self.steps} == dict.fromkeys(self.steps, "SUCCEEDED"), got
        effects = {p.name for p in (self.tmp / "effects").iterdir()}
        want = {
            quote(f"{run_id}:{_STEP[run_id.rstrip('0123456789')]}{i}", safe="")
            for run_id, n in self.steps.items()
            for i in range(n)
        }
        assert want <= effects, f"effects missing: {sorted(want - effects)[:5]}"
        execs = self.executions()
        again = len(execs) - len(set(execs))
        paused = [text.count("keel worker paused") for text in logs]
        resumed = [text.count("keel worker resumed") for text in logs]
        for text, p, r in zip(logs, paused, resumed, strict=True):
            assert "Traceback" not in text, text
            assert p == r, text
            if episodes is None:
                assert p <= 1, text
            elif "keel worker:" in text:  # a standalone worker (not `keel run`)
                assert p == episodes, text
        assert again <= in_flight * max(1, episodes or 0), (again, in_flight)
        return {"re_executed": again, "paused": paused}
