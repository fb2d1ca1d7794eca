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
from typing import Any

import pytest

import keel
from keel.backends.temporal import Backend, connect, result, serve, start
from keel.backends.temporal import signal as send
from keel.types import StepStatus
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
    # (the signal wait, which the workflow decided, is stored with the end)
    pairs = [("record#0", out[0]), ("signal:go#0", None), ("record#1", out[1])]
    assert [(s.key, s.output) for s in steps] == pairs
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


_MEMORY_WORKER = [sys.executable, "-m", "keel.backends.temporal", "tests.apps.temporal_memory_app"]


class _ShortTasks:
    """A client interceptor giving each started workflow a one-second task timeout: a
    worker killed mid-task has its task handed to another after a second, not ten."""

    def intercept_client(self, next: Any) -> Any:
        from dataclasses import replace
        from datetime import timedelta

        from temporalio.client import OutboundInterceptor

        class Short(OutboundInterceptor):
            async def start_workflow(self, input: Any) -> Any:
                short = replace(input, task_timeout=timedelta(seconds=1))
                return await super().start_workflow(short)

        return Short(next)


async def test_a_forget_interrupted_after_its_delete_finishes_once(
    temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ctx.memory.forget: the worker dies after the memory store deleted the memory,
    before the outcome is recorded. Its intent is on record, so the next worker's
    replay knows the memory it finds gone is this run's own delete: the step ends OK
    once, and the memory stays gone (rows and vector index)."""
    from temporalio.client import Client

    from tests.apps import temporal_memory_app

    monkeypatch.setenv("KEEL_TEST_DIR", str(tmp_path))
    url = f"sqlite:///{tmp_path}/keel.db"  # the workers' store: the dead one's and ours
    monkeypatch.setenv("KEEL_STORE", url)
    backend = Backend(address=temporal_address, task_queue=f"forget-{uuid.uuid4().hex[:8]}")
    doomed = subprocess.Popen(
        [*_MEMORY_WORKER, "--backend", backend.url, "--max-cached-workflows", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "KEEL_TEST_DIE": "forget"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert doomed.stdout is not None
        assert doomed.stdout.readline().startswith("serving forget_later on temporal://")
        app = temporal_memory_app.build(url)
        client = await connect(backend, app=app)
        config = client.config()
        config["interceptors"] = [*config["interceptors"], _ShortTasks()]
        client = Client(**config)
        rid = await start(app, client, backend, "forget_later", {"user": "ada"})
        history = client.get_workflow_handle(rid)

        async def added() -> bool:  # the add's outcome is in history: it waits for "go"
            events = (await history.fetch_history()).events
            return any(e.HasField("workflow_task_completed_event_attributes") for e in events)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not await added():
            assert loop.time() < deadline, "the run never reached its wait"
            await asyncio.sleep(0.05)
        await send(client, rid, "go")
        assert doomed.wait(timeout=WAIT) == -9  # it killed itself between delete and outcome
        steps = {s.key: s for s in await app.steps(rid)}
        memory_id = steps["memory.add#0"].output[0]
        intent = steps["memory.forget#0"]  # recorded before the delete, no outcome yet
        assert intent.status is StepStatus.PENDING and intent.error is None
        assert await app.store.memory_rows(ids=[memory_id], vectors=False) == []
        async with serve(app, client, backend, max_cached_workflows=0):
            assert await asyncio.wait_for(result(app, client, rid), WAIT) == memory_id
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(timeout=WAIT)
    steps = {s.key: s for s in await app.steps(rid)}
    assert steps["memory.forget#0"].status is StepStatus.OK
    assert steps["memory.forget#0"].output == memory_id
    assert await app.store.memory_rows(ids=[memory_id], vectors=False) == []
    assert await app.memory.search("ada likes chess", namespace="ada") == []
    await app.close()
