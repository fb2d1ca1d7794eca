"""The CLI against Temporal: `keel worker --backend` hosts an App in a Temporal worker,
and `keel run/runs/show/signal/cancel/trace/costs` work through `App(backend=...)`,
on a real dev server; `App.start` and `RunHandle` on Temporal; bad backend URLs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.backends.temporal import Backend, connect, serve
from tests.limits import WAIT

ROOT = Path(__file__).resolve().parents[1]
APP = "tests.apps.temporal_cli_app"


def keel_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def ok(*args: str, env: dict[str, str]) -> str:
    done = keel_cli(*args, env=env)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def until(read: Callable[[], Any], check: Callable[[Any], bool], what: str) -> Any:
    """Read until `check` holds (visibility and workers catch up), within WAIT."""
    import time

    deadline = time.monotonic() + WAIT
    while True:
        got = read()
        if check(got):
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}: last {got!r}")
        time.sleep(0.2)


@pytest.fixture
def env(store_url: str, temporal_address: str) -> dict[str, str]:
    """The CLI's and the worker's environment: one store (this session's backend)."""
    queue = f"cli-{uuid.uuid4().hex[:8]}"
    e = {**os.environ, "PYTHONPATH": str(ROOT), "KEEL_STORE": store_url}
    e.pop("KEEL_BACKEND", None)
    e["TEST_BACKEND"] = Backend(address=temporal_address, task_queue=queue).url
    return e


def test_the_cli_drives_runs_on_temporal(env: dict[str, str]) -> None:
    url = env["TEST_BACKEND"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "keel", "worker", APP, "--backend", url],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stderr is not None
        line = worker.stderr.readline()
        serving = "keel worker: serving approve, broken, greet, nap on temporal://"
        assert line.startswith(serving), line
        # keel run: started on Temporal, executed by the worker, its result printed
        out = ok("run", f"{APP}:greet", "-i", '{"name": "ada"}', "--backend", url, env=env)
        assert "SUCCEEDED" in out and "hello ada" in out
        # app.run with KEEL_BACKEND set: started on Temporal, the worker runs it (the
        # script leaves through os._exit: the SDK's exit crash, tests/conftest.py)
        script = (
            "import os, sys; from tests.apps.temporal_cli_app import app; "
            "print(app.run('greet', {'name': 'zed'})); sys.stdout.flush(); os._exit(0)"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**env, "KEEL_BACKEND": url},
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert done.returncode == 0 and done.stdout.strip() == "hello zed", done
        # a run that fails: its error printed, exit 1, the error in Keel's store
        failed = keel_cli("run", f"{APP}:broken", "-i", '{"why": "no"}', "--backend", url, env=env)
        assert failed.returncode == 1 and "ValueError: no" in failed.stdout, failed
        # a run waiting for a signal: WAITING, with what it waits for
        out = ok(
            "run",
            f"{APP}:approve",
            "-i",
            '{"name": "bo"}',
            "--id",
            "ap-1",
            "--backend",
            url,
            env=env,
        )
        assert "WAITING" in out and "keel signal ap-1 go" in out

        def runs(*extra: str, e: dict[str, str] = env) -> dict[str, Any]:
            listed = json.loads(ok("runs", "--json", *extra, env=e))
            return {r["id"]: r for r in listed}

        listed = runs("--backend", url)
        assert listed["ap-1"]["status"] == "WAITING" and listed["ap-1"]["waiting_on"] == ["go"]
        assert sorted(r["status"] for r in listed.values()) == [
            "FAILED",
            "SUCCEEDED",
            "SUCCEEDED",
            "WAITING",
        ]
        # KEEL_BACKEND does what --backend does
        assert runs(e={**env, "KEEL_BACKEND": url})["ap-1"]["status"] == "WAITING"
        waiting = json.loads(ok("runs", "--json", "-s", "waiting", "--backend", url, env=env))
        assert [r["id"] for r in waiting] == ["ap-1"]
        # a signal the run does not wait for is refused, saying what it waits for
        refused = keel_cli("signal", "ap-1", "nope", "--backend", url, env=env)
        assert refused.returncode == 2 and "it waits for 'go'" in refused.stderr
        out = ok("signal", "ap-1", "go", "-p", '{"by": "cy"}', "--backend", url, env=env)
        assert "delivered" in out
        until(lambda: runs("--backend", url)["ap-1"]["status"], lambda s: s == "SUCCEEDED", "ap-1")
        shown = json.loads(ok("show", "ap-1", "--json", "--backend", url, env=env))
        assert shown["result"] == "hello bo, approved by cy"
        # the steps the workflow decided too: stored with the end, so no App code needed
        assert [s["key"] for s in shown["steps"]] == ["greet_tool#0", "signal:go#0", "now#0"]
        trace = ok("trace", "ap-1", "--backend", url, env=env)
        assert "greet_tool" in trace
        assert ok("costs", "--by", "run", "--json", env=env).strip().startswith("[")
        # cancel: Temporal's cancellation; the run ends CANCELLED
        ok("run", f"{APP}:approve", "-i", '{"name": "c"}', "--id", "c-1", "--backend", url, env=env)
        out = ok("cancel", "c-1", "--backend", url, env=env)
        assert "run c-1 cancelled" in out
        assert runs("--backend", url)["c-1"]["status"] == "CANCELLED"
        again = keel_cli("cancel", "c-1", "--backend", url, env=env)
        assert again.returncode == 1 and "already ended CANCELLED" in again.stderr
        # a run started with temporalio directly, unknown to Keel's store: listed anyway
        raw = asyncio.run(_start_raw(url))
        listed = until(lambda: runs("--backend", url), lambda r: raw in r, "the raw run")
        assert listed[raw]["workflow"] == "greet"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=WAIT) == 0  # a clean stop, never the SDK's exit crash
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=WAIT)


async def _start_raw(url: str) -> str:
    backend = Backend.from_url(url)
    client = await connect(backend)
    rid = f"raw-{uuid.uuid4().hex[:6]}"
    await client.start_workflow("greet", {"name": "raw"}, id=rid, task_queue=backend.task_queue)
    return rid


def test_bad_backend_urls_are_refused(env: dict[str, str]) -> None:
    done = keel_cli("runs", "--backend", "http://localhost:7233", env=env)
    assert done.returncode == 2
    assert "is not a Temporal URL" in done.stderr and "temporal://host:7233" in done.stderr
    done = keel_cli("runs", env={**env, "KEEL_BACKEND": "temporal://h:7233/a/b"})
    assert done.returncode == 2 and "the path is the namespace" in done.stderr
    done = keel_cli("worker", APP, "--backend", "temporal://h?queue=x", env=env)
    assert done.returncode == 2 and "unknown option(s) queue" in done.stderr
    with pytest.raises(keel.ConfigError, match="is not a Temporal URL"):
        keel.App(backend="redis://localhost")
    done = keel_cli("runs", "--backend", "temporal://127.0.0.1:1/default", env=env)
    assert done.returncode == 2 and "cannot reach Temporal at 127.0.0.1:1" in done.stderr
    url = env["TEST_BACKEND"]
    done = keel_cli("worker", APP, "tests.apps.temporal_app", "--backend", url, env=env)
    assert done.returncode == 2 and "a Temporal worker hosts one App" in done.stderr
    done = keel_cli("worker", APP, "--max-runs", "2", "--backend", url, env=env)
    assert done.returncode == 2 and "size Keel's own worker" in done.stderr


async def test_app_start_and_handles_on_temporal(
    temporal_address: str, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.apps import temporal_cli_app as module

    backend = Backend(address=temporal_address, task_queue=f"app-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("KEEL_BACKEND", backend.url)
    app = keel.App(store_url)
    assert app.backend == backend  # KEEL_BACKEND names it
    app.registry = module.app.registry
    client = await connect(backend, app=app)
    async with serve(app, client, backend, max_cached_workflows=0):
        handle = await app.start("greet", {"name": "ada"}, id="g-1")
        assert await asyncio.wait_for(handle.result(), WAIT) == "hello ada"
        assert (await app.get_run("g-1")).status is keel.RunStatus.SUCCEEDED  # written back
        same = await app.start("greet", id="g-1")  # idempotent
        assert await same.result() == "hello ada"
        with pytest.raises(keel.InputError, match="different input"):
            await app.start("greet", {"name": "bo"}, id="g-1")
        with pytest.raises(keel.InputError):
            await app.start("greet", {"nom": "ada"})
        waiting = await app.start("approve", {"name": "bo"})
        settled = await asyncio.wait_for(waiting.settle(), WAIT)
        assert settled.status is keel.RunStatus.WAITING and settled.waiting_on == ["go"]
        with pytest.raises(keel.RunSuspended, match="WAITING for go"):
            await waiting.result(timeout=0.1)
        with pytest.raises(keel.SignalRefused, match="it waits for 'go'"):
            await waiting.signal("later")
        assert await waiting.signal("later", queue=True) is False  # queued by Temporal
        with pytest.raises(keel.SignalRefused, match="Keel's own"):
            await waiting.signal("review:x")
        assert await waiting.signal("go", {"by": "cy"}) is True
        assert await asyncio.wait_for(waiting.result(), WAIT) == "hello bo, approved by cy"
        with pytest.raises(keel.SignalRefused, match="already SUCCEEDED"):
            await waiting.signal("go", {"by": "cy"})
        doomed = await app.start("approve", {"name": "c"})
        await asyncio.wait_for(doomed.settle(), WAIT)
        assert (await doomed.cancel()).status is keel.RunStatus.CANCELLED
        with pytest.raises(keel.RunCancelled):
            await doomed.result()
        statuses = {r.id: r.status for r in await app.list_runs()}
        assert statuses == {
            "g-1": keel.RunStatus.SUCCEEDED,
            waiting.id: keel.RunStatus.SUCCEEDED,
            doomed.id: keel.RunStatus.CANCELLED,
        }
        # a run sleeping in ctx.sleep is WAITING until its timer fires, as on the engine
        napping = await app.start("nap", {"seconds": 3600})
        slept = await asyncio.wait_for(napping.settle(), WAIT)
        assert slept.status is keel.RunStatus.WAITING and slept.waiting_on == []
        assert slept.wake_at is not None and 3000 < slept.wake_at - time.time() <= 3600
        await napping.cancel()
        held = await app.start("approve", {"name": "dee"}, id="held-1")
        await asyncio.wait_for(held.settle(), WAIT)
        await _console_shows(app)
    # no worker polls any more: runs that cannot answer the state query read RUNNING
    idle = [await app.start("approve", {"name": n}) for n in ("e", "f")]
    statuses = {r.id: r.status for r in await app.list_runs()}
    assert [statuses[h.id] for h in idle] == [keel.RunStatus.RUNNING] * 2
    assert statuses["held-1"] is keel.RunStatus.RUNNING
    await app.close()


async def _console_shows(app: keel.App) -> None:
    """`keel serve`'s API and run pages go through the same App methods: a Temporal
    run waiting for a signal shows WAITING there too, with its journal."""
    import httpx

    from keel.server.app import create_app
    from keel.server.auth import add_user
    from tests.services.pages import sign_in

    token = await add_user(app.store, "vera", "viewer", [])
    transport = httpx.ASGITransport(app=create_app(app, secure_cookies=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as c:
        auth = {"Authorization": f"Bearer {token}"}
        listed = (await c.get("/api/v1/runs", headers=auth)).json()
        assert {r["id"]: r["status"] for r in listed}["held-1"] == "WAITING"
        one = (await c.get("/api/v1/runs/held-1", headers=auth)).json()
        assert one["run"]["status"] == "WAITING" and one["run"]["waiting_on"] == ["go"]
        # the wait it is in, from Temporal's history, as the engine's journal shows it
        journal = [(s["key"], s["status"]) for s in one["journal"]]
        assert journal == [("greet_tool#0", "ok"), ("signal:go#0", "pending")]
        await sign_in(c, token)
        page = await c.get("/runs/held-1")
        assert page.status_code == 200 and "WAITING" in page.text and "greet_tool#0" in page.text
        assert "signal:go#0" in page.text
