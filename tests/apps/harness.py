"""Worker subprocesses on a per-test store (on the session's backend, tests/backends.py),
and readers for what they did (through the store's interfaces, from sync code too).

Used through the `worker_harness` fixture (tests/conftest.py). Everything it
starts it also stops: teardown sends SIGTERM to each worker it spawned (by pid)
and SIGKILLs any that do not exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import keel
from keel.store import RunFilter, Store, WorkerBeat, open_store
from keel.types import RunInfo, StepRecord
from tests.backends import fresh_url
from tests.limits import WAIT

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
APP_MODULE = "tests.apps.crash_app"


@dataclass(frozen=True)
class Kill:
    """One SIGKILL: when, how long the execution log was once the worker was dead,
    and which step keys were journaled at that moment."""

    at: float
    log_len: int
    journaled: frozenset[str]
    pid: int
    run_finished: bool = False  # the run was already terminal when the worker died


@dataclass
class WorkerProc:
    popen: subprocess.Popen[bytes]
    stderr_path: Path
    ready_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr(self, limit: int = 4000) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]


class StoreView:
    """The store's interface calls from sync code, e.g. `view(lambda s: s.get_run("r1"))`.

    Predicates polled by `wait_until` are sync and run inside the test's own event loop,
    so the store lives on a loop of its own, in a thread: one store opened with
    `open_store(url)` and kept until `close()` (cheap to poll, thousands of runs too).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._store: Store | None = None

    def __call__(self, call: Callable[[Store], Awaitable[T]]) -> T:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="harness-store", daemon=True
            )
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(self._call(call), self._loop).result(WAIT)

    async def _call(self, call: Callable[[Store], Awaitable[T]]) -> T:
        if self._store is None:
            self._store = open_store(self.url)
        return await call(self._store)

    def close(self) -> None:
        if self._loop is None:
            return
        if self._store is not None:
            store = self._store
            asyncio.run_coroutine_threadsafe(store.close(), self._loop).result(WAIT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(WAIT)
        self._loop.close()
        self._loop = self._store = None


class Harness:
    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = root
        self.url = url or fresh_url(root)  # default: the session's backend (KEEL_TEST_STORE)
        self.data = root / "data"
        (self.data / "effects").mkdir(parents=True)
        self.procs: list[WorkerProc] = []
        self.apps: list[keel.App] = []
        self.store = StoreView(self.url)
        # Backstop only: a SIGKILLed worker on this host is detected by its dead pid.
        self.base_env: dict[str, str] = {"KEEL_LEASE_SECONDS": "2"}

    # -- apps and workers -------------------------------------------------------

    def app(self, module: str = APP_MODULE) -> keel.App:
        """The test app on this store, for starting runs and reading journals."""
        app: keel.App = importlib.import_module(module).build(self.url)
        self.apps.append(app)
        return app

    def env(self, **extra: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        path = [str(REPO)]
        if env.get("PYTHONPATH"):
            path.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(path)
        env["KEEL_STORE"] = self.url
        env["KEEL_TEST_DIR"] = str(self.data)
        env.update(self.base_env)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def spawn(self, module: str = APP_MODULE, **env: Any) -> WorkerProc:
        """Start `python -m tests.apps.run_worker <module>` on this store."""
        n = len(self.procs)
        stderr_path = self.root / f"worker-{n}.stderr"
        ready_path = self.root / f"worker-{n}.ready"
        full_env = self.env(KEEL_TEST_READY=ready_path, **env)
        with open(stderr_path, "wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "tests.apps.run_worker", module],
                cwd=self.root,  # no stray keel.toml from the caller's directory
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        proc = WorkerProc(popen, stderr_path, ready_path, full_env)
        self.procs.append(proc)
        return proc

    def spawn_keel(self, *args: str, **env: Any) -> WorkerProc:
        """Start the real CLI, `python -m keel.cli ARGS...` (e.g. `worker MODULE`), on this
        store. It is ready once its worker's heartbeat row is in the store (`wait_beat`)."""
        n = len(self.procs)
        stderr_path = self.root / f"keel-{n}.stderr"
        full_env = self.env(**env)
        with open(stderr_path, "wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "keel.cli", *args],
                cwd=self.root,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        proc = WorkerProc(popen, stderr_path, self.root / f"keel-{n}.ready", full_env)
        self.procs.append(proc)
        return proc

    def worker_pids(self) -> set[int]:
        """Pids of the workers that have beaten in the store (live or not)."""
        return {w.pid for w in self.workers()}

    async def wait_beat(self, proc: WorkerProc, timeout: float = WAIT) -> None:
        """Until `proc`'s worker has written its heartbeat row (it is serving)."""
        await self.wait_until(
            lambda: proc.pid in self.worker_pids(),
            timeout=timeout,
            what=f"worker {proc.pid}'s heartbeat row",
            procs=[proc],
            interval=0.02,
        )

    async def wait_ready(self, proc: WorkerProc, timeout: float = WAIT) -> None:
        await self.wait_until(
            proc.ready_path.exists,
            timeout=timeout,
            what=f"worker {proc.pid} to start",
            procs=[proc],
        )

    async def kill(
        self, proc: WorkerProc, app: keel.App, run_id: str | None = None, *, reap: bool = True
    ) -> Kill:
        """SIGKILL `proc`, reap it (or leave a zombie), and snapshot the log and journal."""
        at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        if reap:
            proc.popen.wait(timeout=WAIT)
        else:
            import psutil

            await self.wait_until(
                lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE,
                timeout=WAIT,
                what=f"worker {proc.pid} to die",
            )
        steps = self.steps(run_id) if run_id is not None else self.all_steps()
        journaled = frozenset(f"{s.run_id}:{s.key}" for s in steps if s.status.value != "pending")
        finished = False
        if run_id is not None:
            finished = (await app.get_run(run_id)).status.terminal
        return Kill(
            at=at,
            log_len=len(self.executions()),
            journaled=journaled,
            pid=proc.pid,
            run_finished=finished,
        )

    def terminate(self, proc: WorkerProc, timeout: float = WAIT) -> int:
        """SIGTERM (graceful stop) and wait; returns the exit code."""
        if proc.alive():
            proc.popen.send_signal(signal.SIGTERM)
        return proc.popen.wait(timeout=timeout)

    def rss(self, proc: WorkerProc) -> int:
        import psutil

        return int(psutil.Process(proc.pid).memory_info().rss)

    async def collect(self, proc: WorkerProc, timeout: float = WAIT) -> None:
        """Make the worker gc.collect() (+ malloc_trim) and wait until it has."""
        log = self.data / "gc.log"

        def count() -> int:
            try:
                return log.read_text().split().count(str(proc.pid))
            except OSError:
                return 0

        before = count()
        os.kill(proc.pid, signal.SIGUSR1)
        await self.wait_until(
            lambda: count() > before, timeout=timeout, what="gc in the worker", procs=[proc]
        )

    async def aclose(self) -> None:
        for proc in self.procs:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(timeout=WAIT)
        for app in self.apps:
            await app.close()
        self.store.close()

    # -- observations -------------------------------------------------------------

    def executions(self) -> list[tuple[str, int]]:
        """Execution log lines, in order: (idempotency key, worker pid)."""
        try:
            text = (self.data / "exec.log").read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            key, pid = line.rsplit(" ", 1)
            out.append((key, int(pid)))
        return out

    def execution_counts(self) -> Counter[str]:
        return Counter(k for k, _ in self.executions())

    def effects(self) -> list[str]:
        return sorted(unquote(p.name) for p in (self.data / "effects").iterdir())

    def effect_dupes(self) -> list[str]:
        try:
            text = (self.data / "effect_dupes.log").read_text()
        except FileNotFoundError:
            return []
        return [line.rsplit(" ", 1)[0] for line in text.splitlines()]

    def runs(self) -> list[RunInfo]:
        """Every run in the store."""
        return self.store(lambda s: s.list_runs(RunFilter(limit=2**31)))

    def steps(self, run_id: str) -> list[StepRecord]:
        """The run's journal entries (in no particular order)."""
        return self.store(lambda s: s.load_steps(run_id))

    def all_steps(self) -> list[StepRecord]:
        """The journal entries of every run."""

        async def every(s: Store) -> list[StepRecord]:
            runs = await s.list_runs(RunFilter(limit=2**31))
            return [rec for run in runs for rec in await s.load_steps(run.id)]

        return self.store(every)

    def workers(self) -> list[WorkerBeat]:
        """Every worker that has beaten in the store (live or not)."""
        return self.store(lambda s: s.list_workers())

    def status_counts(self) -> dict[str, int]:
        return dict(Counter(r.status.value for r in self.runs()))

    def diagnostics(self) -> str:
        try:
            counts: Any = self.status_counts()
        except Exception as exc:  # diagnostics must not hide the failure they describe
            counts = f"unreadable ({exc})"
        parts = [f"runs by status: {counts}"]
        try:
            failed = [r for r in self.runs() if r.status.value == "FAILED"][:3]
        except Exception:  # diagnostics must not hide the failure they describe
            failed = []
        parts += [f"run {r.id} FAILED: {r.error}" for r in failed]
        for proc in self.procs:
            state = "alive" if proc.alive() else f"exit {proc.popen.returncode}"
            err = proc.stderr()
            parts.append(f"worker {proc.pid} ({state}) stderr:\n{err or '(empty)'}")
        return "\n".join(parts)

    async def wait_until(
        self,
        pred: Callable[[], Any],
        *,
        timeout: float,
        what: str,
        procs: list[WorkerProc] | tuple[WorkerProc, ...] = (),
        interval: float = 0.002,
    ) -> Any:
        """Poll `pred` (sync or async) until truthy; fail early if a worker in `procs` dies."""
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            for proc in procs:
                if not proc.alive():
                    raise AssertionError(
                        f"worker {proc.pid} exited ({proc.popen.returncode}) while waiting for "
                        f"{what}\n{self.diagnostics()}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}\n{self.diagnostics()}"
                )
            await asyncio.sleep(interval)

    async def wait_status(
        self,
        app: keel.App,
        run_id: str,
        status: str,
        *,
        timeout: float = WAIT,
        procs: list[WorkerProc] | tuple[WorkerProc, ...] = (),
    ) -> keel.RunInfo:
        async def reached() -> keel.RunInfo | None:
            info = await app.get_run(run_id)
            if info.status.terminal and info.status.value != status:
                raise AssertionError(
                    f"run {run_id} ended {info.status.value}, expected {status}: {info.error}\n"
                    f"{self.diagnostics()}"
                )
            return info if info.status.value == status else None

        info: keel.RunInfo = await self.wait_until(
            reached,
            timeout=timeout,
            what=f"run {run_id} to be {status}",
            procs=procs,
            interval=0.01,
        )
        return info
