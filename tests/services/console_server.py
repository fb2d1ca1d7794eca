"""A real `keel serve` plus a real `keel worker` over one SQLite store, for browser tests.

    with console_server(tmp_path) as console:
        token = console.add_user("rita", "reviewer", ["payments"])   # `keel users add`
        console.start("refund_order", {"order": "o-1", "amount": 40}, id="r1")
        page.goto(console.url("/login"))

Both are subprocesses of the `keel` CLI on a free loopback port, with the store in
KEEL_STORE and the working directory in the tmp dir (no stray keel.toml). The test
process starts runs and reads them through an App of its own (`tests.apps.console_app.
build`) on a private event loop in a background thread, so it works beside Playwright's
sync API (whose own loop owns the main thread). Everything started is stopped by PID:
SIGTERM, then SIGKILL. `logs()` returns both processes' stderr, for failure messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import keel
from tests.backends import fresh_url
from tests.limits import WAIT
from tests.services.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
APP_FILE = REPO / "tests" / "apps" / "console_app.py"
T = TypeVar("T")


class ConsoleError(AssertionError):
    pass


class _Proc:
    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.stderr_path = workdir / f"{name}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(
                args,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=WAIT)


class _Loop:
    """An asyncio loop on a daemon thread: `call(coro)` runs it there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=WAIT)
        self.loop.close()


class Console:
    def __init__(self, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.extra_env = dict(extra_env or {})
        self.server: _Proc | None = None
        self.store_url = fresh_url(workdir)  # the session's backend (KEEL_TEST_STORE)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.procs: list[_Proc] = []
        self.tokens: dict[str, str] = {}  # user name -> API token, filled by the tests
        self._loop = _Loop()
        from tests.apps.console_app import build

        self.app: keel.App = build(self.store_url)

    # -- processes ------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        path = [str(REPO)]
        if env.get("PYTHONPATH"):
            path.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(path)
        env["KEEL_STORE"] = self.store_url
        env["KEEL_POLL_INTERVAL"] = "0.05"
        env["NO_COLOR"] = "1"
        env.update(self.extra_env)
        return env

    def keel(self, *args: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
        """Run one `keel` CLI command on this store; fails with its output if it fails."""
        done = subprocess.run(
            [sys.executable, "-m", "keel", *args],
            cwd=self.workdir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise ConsoleError(
                f"keel {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def spawn(self, name: str, *args: str) -> _Proc:
        proc = _Proc(name, [sys.executable, "-m", "keel", *args], self.env(), self.workdir)
        self.procs.append(proc)
        return proc

    def logs(self, limit: int = 6000) -> str:
        return "\n".join(
            f"--- {p.name} (pid {p.popen.pid}) ---\n{p.log()[-limit:]}" for p in self.procs
        )

    def check_alive(self) -> None:
        for proc in self.procs:
            if not proc.alive():
                raise ConsoleError(
                    f"{proc.name} exited {proc.popen.returncode}:\n{proc.log()[-4000:]}"
                )

    def wait_serving(self, timeout: float = WAIT) -> None:
        """Poll until the server answers HTTP at all (any status: /api/v1/me without a
        token is a 401, which proves the app is up)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url("/api/v1/me"), timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # an HTTP answer: the server is up
            except OSError:
                pass
            self.check_alive()
            if time.monotonic() > deadline:
                raise ConsoleError(f"keel serve did not answer within {timeout}s\n{self.logs()}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        with contextlib.suppress(Exception):
            self._loop.call(self.app.close(), timeout=WAIT)
        self._loop.close()

    # -- helpers for tests ----------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base_url + path

    def add_user(self, name: str, role: str, groups: list[str] | None = None) -> str:
        """`keel users add`; returns the token it printed (the last line of its stdout)."""
        args = ["users", "add", name, "--role", role]
        if groups:
            args += ["--groups", ",".join(groups)]
        out = self.keel(*args).stdout.strip().splitlines()
        token = out[-1].strip() if out else ""
        if not token.startswith("keel_"):
            raise ConsoleError(f"keel users add printed no token: {out!r}")
        return token

    def api(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        """One JSON API call (`/api/v1` + path) with a bearer token: (status, JSON body)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url("/api/v1" + path.replace("#", "%23")),
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=WAIT) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        return self._loop.call(coro, timeout)

    def start(self, workflow: str, input: dict[str, Any], id: str) -> str:
        """Enqueue a run for the worker (not executed in this process); its id."""
        handle = self.call(self.app.start(workflow, input, id=id, execute=False))
        return handle.id

    def run(self, run_id: str) -> Any:
        return self.call(self.app.get_run(run_id))

    def wait_status(self, run_id: str, *statuses: str, timeout: float = WAIT) -> Any:
        """Poll the store until the run is in one of `statuses` (e.g. "WAITING")."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.run(run_id)
            if info.status.value in statuses:
                return info
            if time.monotonic() > deadline:
                raise ConsoleError(
                    f"run {run_id} is {info.status.value}, not {'/'.join(statuses)}, "
                    f"after {timeout}s\n{self.logs()}"
                )
            self.check_alive()
            time.sleep(0.05)

    def pending(self, run_id: str) -> Any:
        """The run's one pending decision request (waits until the run is WAITING)."""
        self.wait_status(run_id, "WAITING")
        found = [r for r in self.call(self.app.approvals.list()) if r.run_id == run_id]
        if len(found) != 1:
            raise ConsoleError(f"run {run_id}: expected one pending request, got {found!r}")
        return found[0]

    def review(self, review_id: str) -> Any:
        return self.call(self.app.approvals.get(review_id))


@contextmanager
def console_server(
    workdir: Path, *serve_args: str, worker: bool = True, env: dict[str, str] | None = None
) -> Iterator[Console]:
    """`keel worker` + `keel serve` on `tests/apps/console_app.py` over a store in
    `workdir`; stops both (by PID) on exit. `serve_args` go to `keel serve`, `env` to both
    processes (e.g. KEEL_MAX_BODY); `worker=False` starts the server alone."""
    workdir = workdir.resolve()
    console = Console(workdir, env or {})
    try:
        console.keel("runs", "--limit", "1")  # creates the schema before two processes race
        if worker:
            console.spawn("worker", "worker", str(APP_FILE))
        console.server = console.spawn(
            "server",
            "serve",
            str(APP_FILE),
            "--host",
            "127.0.0.1",
            "--port",
            str(console.port),
            *serve_args,
        )
        console.wait_serving()
        yield console
    except BaseException:
        sys.stderr.write(console.logs())
        raise
    finally:
        console.stop()
