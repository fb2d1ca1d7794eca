"""The throwaway Postgres of the tests leaves nothing behind: a session that ends through
`os._exit` (tests/conftest.py, the Temporal SDK's exit crash) still stops its server and
removes its data, and a later session sweeps what a killed one left. Leaked data
directories (gigabytes each) once filled the disk of the machine CI runs on."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.limits import WAIT
from tests.services import postgres

ROOT = Path(__file__).resolve().parent.parent

_SESSION = """
import temporalio.bridge.temporal_sdk_bridge  # the conftest's os._exit path
from tests.services.postgres import server

def test_uses_the_server():
    srv = server()
    print(f"ROOT={srv.root} PID={srv.pid}", flush=True)
"""


def test_a_session_leaving_through_os_exit_stops_its_server_and_removes_its_data(
    tmp_path: Path,
) -> None:
    if not postgres.binary("initdb"):
        postgres.unavailable("initdb not found")
    (tmp_path / "test_session.py").write_text(_SESSION)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "tests.conftest",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=WAIT * 12,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    line = next(w for w in done.stdout.split("\n") if w.startswith("ROOT="))
    root, pid = Path(line.split()[0][5:]), int(line.split()[1][4:])
    assert not root.exists(), f"{root} left behind"
    deadline = time.monotonic() + WAIT
    while postgres._alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not postgres._alive(pid), "the postmaster still runs"


def test_a_later_session_sweeps_the_data_of_servers_that_are_gone() -> None:
    def left(pid: int | None, age: float) -> Path:
        root = Path(tempfile.mkdtemp(prefix="keel-pg-"))
        (root / "data").mkdir()
        if pid is not None:
            (root / "data" / "postmaster.pid").write_text(f"{pid}\n/x\n")
        (root / "log").write_text("")
        for p in (root / "log", root):
            os.utime(p, (time.time() - age, time.time() - age))
        return root

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = left(dead.pid, age=3600)
    half_made = left(None, age=3600)
    restarting = left(dead.pid, age=5)  # a concurrent session's kill_server + restart
    live = left(os.getpid(), age=3600)
    try:
        postgres._sweep()
        assert not gone.exists() and not half_made.exists()
        assert restarting.exists() and live.exists()
    finally:
        for root in (gone, half_made, restarting, live):
            subprocess.run(["rm", "-rf", str(root)], check=True)
