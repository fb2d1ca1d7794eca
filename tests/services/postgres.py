"""A throwaway Postgres 15 for the whole test session, and a fresh database per store.

The server starts the first time a test needs it (`server()`): `initdb` in a temp dir,
`pg_ctl` on a free loopback port (as the `postgres` account when we are root, since
initdb refuses root), durability off (a test server needs none of it, and commits get
much cheaper). It is stopped by its PID when the test process exits. `fresh_database()`
makes an empty database on it per call (CREATE DATABASE from template0: fast), so each
test's store is isolated. Without the binaries a test is skipped with the install hint;
under CI=true it fails instead.

Example:
    url = fresh_database()  # postgresql://postgres@127.0.0.1:PORT/keel_ab12cd34
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.limits import WAIT

_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/local/bin")


@dataclass(frozen=True, slots=True)
class Server:
    """A running throwaway server: where it listens and how to reach it with psql."""

    host: str
    port: int
    bindir: str
    root: Path
    pid: int
    # Commits survive a crash of the server (kill_server): synchronous_commit stays on.
    durable: bool = False

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for `dbname` on this server (trust auth: no password)."""
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def psql(self, dbname: str = "postgres") -> list[str]:
        """A psql command line for `dbname`, without a script."""
        return [
            f"{self.bindir}/psql", "-X", "-q", "-h", self.host, "-p", str(self.port),
            "-U", "postgres", "-d", dbname,
        ]  # fmt: skip


_lock = threading.Lock()
_server: Server | None = None
_broken: str | None = None  # why the server could not start (not retried)
_running: list[Server] = []  # every server this process started and has not stopped


def binary(name: str) -> str | None:
    """Path of a Postgres program (Debian keeps them out of PATH)."""
    for d in _BIN_DIRS:
        if os.access(f"{d}/{name}", os.X_OK):
            return f"{d}/{name}"
    return shutil.which(name)


def unavailable(reason: str) -> None:
    """Skip the test with the install hint (fail under CI=true)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"Postgres 15 is required under CI: {reason}")
    pytest.skip(
        f"no throwaway Postgres: {reason}; install it with `apt-get install postgresql`"
        " (scripts/services.sh does, under make test)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server() -> Server:
    """The session's server, started on first use; skips (fails under CI) without one."""
    global _server, _broken
    with _lock:
        if _server is None and _broken is None:
            try:
                _server = _start()
            except Unavailable as exc:
                _broken = str(exc)
        if _server is None:
            unavailable(_broken or "not started")
        assert _server is not None
        return _server


class Unavailable(Exception):
    """The Postgres binaries are missing or the server would not start."""


def start_server(*, durable: bool = False) -> Server:
    """A new throwaway server of the caller's own (tests that kill or restart one, the
    benches); stop it with `stop_server`. Raises `Unavailable` without the binaries.

    `durable`: an acknowledged commit survives `kill_server` (without it the last
    fraction of a second of commits may be lost, as `synchronous_commit=off` allows)."""
    return _start(durable)


def stop_server(srv: Server) -> None:
    """Stop a server from `start_server` by its PID and remove its files."""
    _stop(srv)


def kill_server(srv: Server) -> None:
    """`kill -9` the postmaster of a server from `start_server` (a crash: its backends
    exit when they notice); `restart_server` starts it again."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(_pid(srv), signal.SIGKILL)


def restart_server(srv: Server) -> Server:
    """Start a server from `start_server` again, on the same data directory and port:
    a running one is shut down first (fast: its sessions are dropped), a killed one's
    backends are waited for (until they are gone Postgres refuses to start)."""
    pg_ctl = f"{srv.bindir}/pg_ctl"
    data = srv.root / "data"
    pid = _pid(srv)
    if _alive(pid):
        os.kill(pid, signal.SIGINT)
        gone = time.monotonic() + WAIT
        while _alive(pid) and (data / "postmaster.pid").exists() and time.monotonic() < gone:
            time.sleep(0.05)
    deadline = time.monotonic() + WAIT
    while True:
        res = subprocess.run(
            [*_as_postgres(), pg_ctl, "-D", str(data), "-l", str(srv.root / "log"),
             "-o", _opts(srv.root, srv.port, srv.durable), "-w", "start"],
            capture_output=True,
            timeout=WAIT * 6,
        )  # fmt: skip
        if res.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise Unavailable(f"pg_ctl start failed again: {res.stderr.decode()[-500:]}")
        time.sleep(0.2)
    return dataclasses.replace(srv, pid=_pid(srv))


def _pid(srv: Server) -> int:
    """The postmaster's PID now (a restart changes it); `srv.pid` when it is gone."""
    try:
        return int((srv.root / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return srv.pid


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, which a container's init may never reap, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _as_postgres() -> list[str]:
    """The prefix that runs a Postgres program as the postgres account when we are root
    (initdb and the server refuse root)."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise Unavailable("running as root and runuser is missing")
    return [runuser, "-u", "postgres", "--"]


def _opts(root: Path, port: int, durable: bool = False) -> str:
    # fsync=off loses data only when the OS crashes; synchronous_commit=off when the
    # server does (its WAL buffers are not written out at each commit).
    commit = "" if durable else " -c synchronous_commit=off"
    return (
        f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off{commit}"
        " -c full_page_writes=off -c max_connections=400"
    )


def _start(durable: bool = False) -> Server:
    initdb, pg_ctl = binary("initdb"), binary("pg_ctl")
    if not (initdb and pg_ctl and binary("psql")):
        raise Unavailable("initdb, pg_ctl or psql not found (looked in /usr/lib/postgresql/15/bin)")
    as_user = _as_postgres()
    _sweep()
    # Outside pytest's (private) temp tree: the postgres account must reach it.
    root = Path(tempfile.mkdtemp(prefix="keel-pg-"))
    if as_user:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()
    opts = _opts(root, port, durable)
    try:
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=WAIT * 6,
        )
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-o", opts, "-w", "start"],
            check=True,
            capture_output=True,
            timeout=WAIT * 6,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(f"{exc.cmd[len(as_user)]} failed: {exc.stderr.decode()[-500:]}") from None
    pid = int((data / "postmaster.pid").read_text().split()[0])
    found = Server("127.0.0.1", port, os.path.dirname(initdb), root, pid, durable)
    _running.append(found)
    return found


def stop_all() -> None:
    """Stop every server this process started and remove their files. Runs at exit, and
    from tests/conftest.py before a session that loaded the Temporal SDK leaves through
    `os._exit` (which skips atexit: each left-behind data directory was gigabytes)."""
    while _running:
        _stop(_running.pop())


atexit.register(stop_all)


def _sweep() -> None:
    """Remove the data directories of earlier sessions whose server is gone (a test
    process killed before its exit handlers ran). Untouched for 10 minutes too: a
    concurrent session's server may be down for a moment (kill_server, restart)."""
    for root in Path(tempfile.gettempdir()).glob("keel-pg-*"):
        try:
            idle = time.time() - max(p.stat().st_mtime for p in (root, *root.glob("log")))
        except OSError:  # removed meanwhile
            continue
        try:
            pid = int((root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = 0  # never started, or stopped half-way
        if idle > 600 and not (pid and _alive(pid)):
            shutil.rmtree(root, ignore_errors=True)


def _stop(srv: Server) -> None:
    """Fast shutdown by PID, then the data directory goes."""
    # By directory: a restart hands out a new Server for the same one.
    _running[:] = [s for s in _running if s.root != srv.root]
    pid = _pid(srv)  # the current postmaster, after a restart too
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:  # killed (kill_server) and not restarted: nothing to wait for
        shutil.rmtree(srv.root, ignore_errors=True)
        return
    deadline = time.monotonic() + WAIT * 6
    while time.monotonic() < deadline and (srv.root / "data" / "postmaster.pid").exists():
        if not _alive(pid):  # killed (its pid file stays), or a zombie nobody reaps
            break
        time.sleep(0.05)
    shutil.rmtree(srv.root, ignore_errors=True)


def fresh_database(prefix: str = "keel") -> str:
    """An empty database of its own on the session's server, as a store URL."""
    import psycopg

    srv = server()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}".lower()
    with psycopg.connect(srv.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return srv.url(name)


def rows(url: str) -> list[str]:
    """Every row of every table of the database at `url`, as text (for "wrote nothing"
    checks)."""
    import psycopg

    out: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
        for (table,) in tables:
            for (row,) in conn.execute(f'SELECT t::text FROM "{table}" t ORDER BY 1'):
                out.append(f"{table}: {row}")
    return out
