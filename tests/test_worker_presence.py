"""Worker heartbeats in the store, and decisions that say whether a live worker will
resume the run: `keel workers`, the CLI's decision commands, `keel serve --worker`,
the API's `worker_live` and the console's notices. Workers are real `keel` CLI
subprocesses (tests/apps/worker_app.py); so is `keel serve`.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest

import keel
from keel.server.app import create_app
from keel.server.auth import add_user
from tests.apps.harness import Harness, WorkerProc
from tests.limits import WAIT
from tests.services.pages import csrf_of, element, sign_in
from tests.services.redis_server import free_port

pytestmark = pytest.mark.slow

MODULE = "tests.apps.worker_app"
NO_WORKER = "no live worker serves workflow 'granted', so run {run} waits — start one: keel worker"


async def keel_cli(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    """One `keel` command as its own process, on the harness's store."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "keel.cli", *args],
        cwd=h.root,
        env=h.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def listed_workers(h: Harness, *flags: str) -> list[dict[str, Any]]:
    res = await keel_cli(h, "workers", "--json", *flags)
    assert res.returncode == 0, res.stderr
    rows: list[dict[str, Any]] = json.loads(res.stdout)
    return rows


async def parked(h: Harness, workflow: str, inputs: dict[str, Any], run_id: str) -> None:
    """Start a run in an App of this process until it waits for a person, then close that
    App: no worker of this process is left to resume it."""
    app = importlib.import_module(MODULE).build(h.url)
    try:
        info = await (await app.start(workflow, inputs, id=run_id)).settle(WAIT)
        assert info.status is keel.RunStatus.WAITING, info
    finally:
        await app.close()


def worker(h: Harness, **env: Any) -> WorkerProc:
    return h.spawn_keel("worker", MODULE, **{"KEEL_LEASE_SECONDS": 30, **env})


# -- heartbeats ---------------------------------------------------------------------------


async def test_a_worker_is_listed_while_it_runs_and_not_after_a_clean_exit(
    worker_harness: Harness,
) -> None:
    h = worker_harness
    proc = worker(h)
    await h.wait_beat(proc)
    (row,) = await listed_workers(h)
    assert row["pid"] == proc.pid and row["live"] is True and row["embedded"] is False
    assert row["workflows"] == [
        "drainable", "escalated", "fan", "granted", "keel.memory.extract", "retried", "signalled"
    ]  # Keel's own workflows are hosted too
    assert row["host"] and row["last_seen"] >= row["started_at"]
    text = await keel_cli(h, "workers")
    assert str(proc.pid) in text.stdout and "granted" in text.stdout

    assert h.terminate(proc) == 0, proc.stderr()
    assert proc.pid not in h.worker_pids()
    assert await listed_workers(h, "--all") == []
    text = await keel_cli(h, "workers")
    assert text.stdout.strip() == "no live workers; start one: keel worker MODULE"


async def test_a_killed_worker_stops_counting_as_live_after_three_heartbeats(
    worker_harness: Harness,
) -> None:
    h = worker_harness
    proc = worker(h, KEEL_LEASE_SECONDS=3)  # a heartbeat each second: live for 3 s after
    await h.wait_beat(proc)
    app = h.app(MODULE)
    await h.kill(proc, app)

    async def gone() -> bool:
        return await listed_workers(h) == []

    await h.wait_until(gone, timeout=WAIT, what="the killed worker to stop counting as live")
    (row,) = await listed_workers(h, "--all")  # its row stays, marked gone
    assert row["pid"] == proc.pid and row["live"] is False


# -- the CLI's decision commands -----------------------------------------------------------


async def test_cli_decisions_say_run_resumes_only_when_a_live_worker_serves_it(
    worker_harness: Harness,
) -> None:
    h = worker_harness
    app = h.app(MODULE)
    await parked(h, "granted", {"n": 1}, "g1")
    await parked(h, "granted", {"n": 2}, "g2")
    await parked(h, "escalated", {"n": 3}, "e1")
    await parked(h, "signalled", {}, "s1")

    res = await keel_cli(h, "approvals", "approve", "g1:approval:grant#0", "--by", "ann")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (
        "approval g1:approval:grant#0 approved; " + NO_WORKER.format(run="g1") + " MODULE"
        " (or keel serve --worker MODULE)"
    )
    res = await keel_cli(h, "escalations", "resolve", "e1:lookup#0", "--result", "7")
    assert res.returncode == 0, res.stderr
    assert "resolved; no live worker serves workflow 'escalated', so run e1 waits" in res.stdout
    res = await keel_cli(h, "signal", "s1", "go", "--payload", '"x"')
    assert res.returncode == 0, res.stderr
    assert "no live worker serves workflow 'signalled', so run s1 waits" in res.stdout
    assert (await app.get_run("g1")).status is keel.RunStatus.PENDING  # nothing ran it

    proc = worker(h)
    await h.wait_beat(proc)
    # The worker takes up what was decided before it started...
    for run_id, result in (("g1", 1), ("e1", 7), ("s1", "x")):
        info = await h.wait_status(app, run_id, "SUCCEEDED", timeout=WAIT, procs=[proc])
        assert info.result == result
    # ...and a decision made while it runs says the run resumes.
    res = await keel_cli(
        h, "approvals", "reject", "g2:approval:grant#0", "--reason", "no budget"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (
        "approval g2:approval:grant#0 rejected; run g2 continues with the rejection"
    )
    await h.wait_status(app, "g2", "FAILED", timeout=WAIT, procs=[proc])
    assert h.terminate(proc) == 0, proc.stderr()


async def test_an_embedded_worker_elsewhere_is_named_but_not_promised(
    worker_harness: Harness,
) -> None:
    """An App's own worker resumes only the runs its process started: say so, plainly."""
    h = worker_harness
    await parked(h, "granted", {"n": 1}, "g1")
    other = h.app(MODULE)
    await other.start("signalled", {}, id="elsewhere")  # this process now has an embedded worker
    res = await keel_cli(h, "approvals", "approve", "g1:approval:grant#0")
    assert res.returncode == 0, res.stderr
    assert "run g1 resumes only if the process that started it still runs" in res.stdout
    assert "no `keel worker` serves workflow 'granted'" in res.stdout


# -- keel serve --worker and the API --------------------------------------------------------


async def test_keel_serve_with_a_worker_resumes_a_decided_run(worker_harness: Harness) -> None:
    h = worker_harness
    app = h.app(MODULE)
    res = await keel_cli(h, "users", "add", "ann", "--role", "admin")
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip()
    await parked(h, "granted", {"n": 4}, "g4")
    await parked(h, "granted", {"n": 5}, "g5")

    port = free_port()
    serve = h.spawn_keel(
        "serve", "--port", str(port), "--worker", MODULE, KEEL_LEASE_SECONDS=600
    )
    await h.wait_beat(serve)
    base = f"http://127.0.0.1:{port}/api/v1"
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as client:

        async def answering() -> bool:
            try:
                return (await client.get(f"{base}/me", headers=auth)).status_code == 200
            except httpx.TransportError:
                return False

        await h.wait_until(answering, timeout=WAIT, what="keel serve to answer", procs=[serve])
        workers = (await client.get(f"{base}/workers", headers=auth)).json()
        assert [w["pid"] for w in workers] == [serve.pid]
        r = await client.post(
            f"{base}/approvals/g4:approval:grant%230/approve", json={"note": "ok"}, headers=auth
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["worker_live"] is True and body["message"] == "run g4 resumes"
        info = await h.wait_status(app, "g4", "SUCCEEDED", timeout=WAIT, procs=[serve])
        assert info.result == 4

    serve.popen.send_signal(signal.SIGTERM)
    assert serve.popen.wait(timeout=WAIT) == 0, serve.stderr()
    assert "drained" in serve.stderr()
    assert serve.pid not in h.worker_pids()

    # Without a worker, the same API says so.
    server = create_app(keel.App(h.url), secure_cookies=False)
    transport = httpx.ASGITransport(app=server)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as c:
        r = await c.post(
            "/api/v1/approvals/g5:approval:grant%230/approve", json={}, headers=auth
        )
        assert r.status_code == 200, r.text
        assert r.json()["worker_live"] is False
        assert r.json()["message"].startswith(NO_WORKER.format(run="g5"))


# -- the console ------------------------------------------------------------------------------


async def test_console_pages_say_when_no_worker_will_resume_a_decided_run(
    worker_harness: Harness,
) -> None:
    h = worker_harness
    await parked(h, "granted", {"n": 6}, "g6")
    await parked(h, "granted", {"n": 7}, "g7")
    app = h.app(MODULE)
    token = await add_user(app.store, "rita", "reviewer", ["*"])
    transport = httpx.ASGITransport(app=create_app(app, secure_cookies=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as c:
        await sign_in(c, token)
        inbox = await c.get("/inbox")
        assert "No live worker serves granted" in element(inbox.text, "no-worker")

        page = await c.get("/approvals/g6:approval:grant%230")
        assert 'id="resume-notice"' not in page.text  # not decided yet
        r = await c.post(
            "/approvals/g6:approval:grant%230/approve",
            data={"csrf": csrf_of(page.text), "arg.n": "6"},  # the proposed argument, as shown
        )
        assert r.status_code == 303
        decided = await c.get(r.headers["location"])
        notice = element(decided.text, "resume-notice")
        assert notice.startswith(NO_WORKER.format(run="g6")), notice

        proc = worker(h)
        await h.wait_beat(proc)
        await h.wait_status(app, "g6", "SUCCEEDED", timeout=WAIT, procs=[proc])
        inbox = await c.get("/inbox")
        assert 'id="no-worker"' not in inbox.text  # g7 waits, and a live worker serves it
        decided = await c.get("/approvals/g6:approval:grant%230")
        assert 'id="resume-notice"' not in decided.text  # its run has ended
    assert h.terminate(proc) == 0, proc.stderr()


async def test_a_decided_run_a_fast_worker_already_ended_went_on(make_app: Any) -> None:
    """The notice after a decision is read after it: a worker may have resumed and ended
    the run meanwhile (on a networked store most often). That run went on; one
    cancelled, or one nobody decided on, had ended."""
    from keel.presence import resume_notice

    app = make_app()

    @app.workflow
    async def quick(ctx: keel.Context) -> int:
        return 1

    await (await app.start(quick, id="fast-1")).result(WAIT)
    went_on = await resume_notice(app, "fast-1", "continues with the failure", decided=True)
    assert went_on.worker_live and went_on.message == "run fast-1 continues with the failure"
    ended = await resume_notice(app, "fast-1")
    assert not ended.worker_live and ended.message == "run fast-1 already ended SUCCEEDED"
    handle = await app.start(quick, id="gone-1", execute=False)
    await handle.cancel()
    cancelled = await resume_notice(app, "gone-1", decided=True)
    assert not cancelled.worker_live and cancelled.message == "run gone-1 already ended CANCELLED"
