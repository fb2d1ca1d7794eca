"""A Temporal worker SIGKILLed mid-run: another worker finishes the run from history,
and the step the dead worker finished is not run again (Keel's guarantee, on Temporal)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import keel
from keel.backends.temporal import Backend, connect, result, serve, start
from keel.backends.temporal import signal as send
from tests.apps import temporal_app
from tests.limits import WAIT

ROOT = Path(__file__).resolve().parents[1]


def _executions(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


async def _until(check: object, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not check():  # type: ignore[operator]
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_killed_worker_s_run_is_finished_by_another(
    temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_TEST_DIR", str(tmp_path))
    url = f"sqlite:///{tmp_path}/keel.db"  # the workers' store: the dead one's and ours
    monkeypatch.setenv("KEEL_STORE", url)
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    backend = Backend(address=temporal_address, task_queue=queue)
    doomed = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keel.backends.temporal",
            "tests.apps.temporal_app",
            "--backend",
            backend.url,
            "--max-cached-workflows",
            "0",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert doomed.stdout is not None
        assert doomed.stdout.readline().startswith("serving pipeline on temporal://")
        app = temporal_app.build(url)
        client = await connect(backend, app=app)
        rid = await start(app, client, backend, "pipeline", {"name": "job"})
        log = tmp_path / "exec.log"
        await _until(lambda: len(_executions(log)) == 1, "the first step in the doomed worker")
        history = client.get_workflow_handle(rid)

        async def waiting() -> bool:  # the first step's result is in history
            events = (await history.fetch_history()).events
            return sum(e.HasField("workflow_task_completed_event_attributes") for e in events) >= 2

        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not await waiting():
            assert loop.time() < deadline, "the run never got past its first step"
            await asyncio.sleep(0.05)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=WAIT)
        async with serve(app, client, backend, max_cached_workflows=0):
            await send(client, rid, "go")
            out = await asyncio.wait_for(result(app, client, rid), WAIT)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(timeout=WAIT)
    runs = _executions(log)
    assert [r[1] for r in runs] == ["job-first", "job-second"]  # each step ran once
    assert runs[0][2] == str(doomed.pid) and runs[1][2] == str(os.getpid())
    assert out == [f"job-first by {doomed.pid}", f"job-second by {os.getpid()}"]
    # Keel's store holds the run's end and each step once, whichever worker ran it
    run = await app.get_run(rid)
    assert run.status is keel.RunStatus.SUCCEEDED and run.result == out
    steps = sorted(await app.steps(rid), key=lambda s: s.position)
    assert [(s.key, s.output) for s in steps] == [("record#0", out[0]), ("record#1", out[1])]
    await app.close()


async def test_the_worker_entry_stops_cleanly_on_sigterm(
    temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m keel.backends.temporal MODULE --backend URL` serves until SIGTERM, then
    exits 0 (never the SDK's exit crash); without a backend it says how to give one."""
    monkeypatch.setenv("KEEL_TEST_DIR", str(tmp_path))
    monkeypatch.setenv("KEEL_STORE", f"sqlite:///{tmp_path}/keel.db")
    monkeypatch.delenv("KEEL_BACKEND", raising=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    entry = [sys.executable, "-m", "keel.backends.temporal", "tests.apps.temporal_app"]
    refused = subprocess.run(entry, cwd=ROOT, env=env, capture_output=True, text=True, timeout=WAIT)
    assert refused.returncode == 2
    assert "pass --backend temporal://host:7233/namespace?task_queue=queue" in refused.stderr
    backend = Backend(address=temporal_address, task_queue=f"entry-{uuid.uuid4().hex[:8]}")
    worker = subprocess.Popen(
        [*entry, "--backend", backend.url], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().startswith("serving pipeline on")
        app = temporal_app.build(f"sqlite:///{tmp_path}/keel.db")
        client = await connect(backend, app=app)
        rid = await start(app, client, backend, "pipeline", {"name": "e"})
        await send(client, rid, "go")
        out = await asyncio.wait_for(result(app, client, rid), WAIT)
        assert out == [f"e-first by {worker.pid}", f"e-second by {worker.pid}"]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=WAIT) == 0
        await app.close()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=WAIT)
