"""`keel workers` (and `/api/v1/workers`) on Temporal: the Temporal workers polling the
App's task queue, as Temporal reports them (keel/backends/temporal/pollers.py), on the
session's dev server; a worker hosted in this process by `serve`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import keel
from keel.backends.temporal import Backend
from keel.backends.temporal.pollers import identity, parse_identity
from keel.cli import cli
from keel.server.app import create_app
from keel.server.auth import add_user
from tests.limits import WAIT
from tests.temporal_run import OnTemporal, on_temporal


async def keel_cmd(store_url: str, *args: str) -> tuple[int, str, str]:
    """The `keel` CLI on the test's store (in a thread: it runs its own event loop)."""

    def invoke() -> Any:
        env = {"KEEL_STORE": store_url, "COLUMNS": "240", "NO_COLOR": "1", "KEEL_BACKEND": None}
        return CliRunner().invoke(cli, list(args), env=env)

    res = await asyncio.to_thread(invoke)
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture
async def hosted(store_url: str, temporal_address: str) -> AsyncIterator[OnTemporal]:
    """A small App served by a Temporal worker of this process on its own task queue."""
    app = keel.App(store_url)

    @app.tool
    async def hello(name: str) -> str:
        return f"hello {name}"

    @app.workflow
    async def greet(ctx: keel.Context, name: str) -> str:
        return await ctx.call(hello, name)

    async with on_temporal(app, temporal_address) as t:
        app.backend = t.backend  # the App's own reads (the API) ask this backend
        yield t
    await app.close()


async def polled(t: OnTemporal, *args: str) -> list[dict[str, Any]]:
    """`keel workers --json` on the worker's backend, once Temporal lists its pollers
    of both task types (a worker polls its activities a moment after it starts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        code, out, err = await keel_cmd(
            t.app.store_url, "workers", "--json", "--backend", t.backend.url, *args
        )
        assert code == 0, err
        rows: list[dict[str, Any]] = json.loads(out)
        ours = [r for r in rows if r["executor"] == "temporal"]
        if ours and sorted(ours[0]["polls"]) == ["activity", "workflow"]:
            return rows
        assert loop.time() < deadline, f"no Temporal worker listed: {rows}"
        await asyncio.sleep(0.2)


async def test_a_temporal_worker_is_listed_with_its_queue_host_pid_and_workflows(
    hosted: OnTemporal,
) -> None:
    rows = await polled(hosted)
    (row,) = rows  # no Keel worker runs: only Temporal's
    assert row["executor"] == "temporal" and row["task_queue"] == hosted.backend.task_queue
    assert row["host"] == socket.gethostname() and row["pid"] == os.getpid()
    assert row["workflows"] == ["greet", "keel.memory.extract"] and row["live"] is True
    assert row["identity"].startswith(f"{os.getpid()}@") and row["rate_per_second"] is None
    # the table: the same worker, its executor and queue
    code, out, err = await keel_cmd(
        hosted.app.store_url, "workers", "--backend", hosted.backend.url
    )
    assert code == 0, err
    assert f"temporal (queue {hosted.backend.task_queue})" in out and str(os.getpid()) in out
    assert "greet" in out and "no Temporal worker" not in out
    # the API lists it too (one shared function: keel.presence.listed_workers)
    token = await add_user(hosted.app.store, "vera", "viewer", [])
    transport = httpx.ASGITransport(app=create_app(hosted.app))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as client:
        got = await client.get("/api/v1/workers", headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 200, got.text
    assert [(w["executor"], w["pid"]) for w in got.json()] == [("temporal", os.getpid())]


async def test_with_no_temporal_worker_the_message_says_how_to_start_one(
    store_url: str, temporal_address: str
) -> None:
    queue = f"idle-{uuid.uuid4().hex[:8]}"
    url = Backend(address=temporal_address, task_queue=queue).url
    code, out, err = await keel_cmd(store_url, "workers", "--backend", url)
    assert code == 0, err
    assert out.strip() == (
        f"no Temporal worker polls task queue {queue!r}, so runs on it wait; start one: "
        "keel worker MODULE --backend URL"
    )
    code, out, err = await keel_cmd(store_url, "workers", "--json", "--backend", url)
    assert code == 0 and json.loads(out) == [], err
    # Temporal unreachable: a clear usage error, not a listing without Temporal's workers
    code, out, err = await keel_cmd(
        store_url, "workers", "--backend", "temporal://127.0.0.1:1/default"
    )
    assert code == 2 and "cannot reach Temporal at 127.0.0.1:1" in err, (out, err)
    nowhere = Backend(address=temporal_address, namespace="no-such-ns", task_queue=queue).url
    code, out, err = await keel_cmd(store_url, "workers", "--backend", nowhere)
    assert code == 2 and f"cannot list the workers of task queue {queue!r}" in err, err
    assert "no-such-ns" in err and "check the address and namespace" in err


def test_identities_give_host_pid_and_workflows_when_they_have_the_shape() -> None:
    assert parse_identity("41@web-1") == ("web-1", 41, ())  # temporalio's default
    assert parse_identity("41@web-1 keel[a,b.c]") == ("web-1", 41, ("a", "b.c"))
    assert parse_identity("my-worker") == (None, None, ())  # set by its owner
    mine = identity(["b", "a"])
    assert parse_identity(mine) == (socket.gethostname(), os.getpid(), ("a", "b"))
    # Temporal refuses identities over 1,000 characters: the rest is counted, not named
    many = identity(f"workflow_{i:03}" for i in range(200))
    assert len(many) <= 900 and parse_identity(many)[2][-1].startswith("+")
