"""Wake-ups across processes: a decision made in one process resumes the run in a worker
process elsewhere without polling (Postgres LISTEN/NOTIFY, SQLite's data_version).

The worker processes here poll for claims only every 600 s (`KEEL_LISTEN_POLL`,
`KEEL_POLL_MAX`), far longer than any wait below (tests/limits.py WAIT), so a run
resumed in time was woken by the store's feed: no timing is asserted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.engine.runtime import Settings
from keel.engine.wakeups import Pacer, check_pacing
from keel.engine.worker import Worker
from keel.errors import ConfigError
from keel.store import open_store
from keel.store.wake import WakeFeed, parse_wake
from keel.types import RunStatus
from tests.apps.harness import Harness, StoreView
from tests.limits import WAIT

APP = "tests.apps.wake_app"
# Claims only when the store wakes the worker: the safety poll never comes in a test.
QUIET = {"KEEL_POLL_MAX": "600", "KEEL_LISTEN_POLL": "600"}


def _url(backend: str, tmp_path: Path) -> str:
    if backend == "postgres":
        from tests.services.postgres import fresh_database

        return fresh_database()
    return f"sqlite:///{tmp_path}/wake.db"


def _on(h: Harness, url: str) -> None:
    h.url = url
    h.store = StoreView(url)


async def _status(h: Harness, run_id: str, status: RunStatus, procs: list[Any]) -> None:
    def reached() -> bool:
        run = h.store(lambda s: s.get_run(run_id))
        return run is not None and run.status is status

    await h.wait_until(reached, timeout=WAIT, what=f"{run_id} {status.value}", procs=procs)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_signal_sent_by_another_process_resumes_the_run_at_once(
    worker_harness: Harness, tmp_path: Path, backend: str
) -> None:
    h = worker_harness
    _on(h, _url(backend, tmp_path))
    # Postgres pushes, so even the first poll is 600 s away; SQLite checks data_version
    # every poll_interval, and claims only when it moved.
    first = "600" if backend == "postgres" else "0.05"
    worker = h.spawn(APP, KEEL_POLL_INTERVAL=first, **QUIET)
    await h.wait_ready(worker)
    app = h.app(APP)  # this process: it starts and signals, it executes nothing
    await app.start("waits", {}, id="w1", execute=False)  # a new run wakes the worker too
    await _status(h, "w1", RunStatus.WAITING, [worker])

    assert await app.signal("w1", "go", {"n": 1}) is True
    await _status(h, "w1", RunStatus.SUCCEEDED, [worker])
    assert (await app.get_run("w1")).result == "got {'n': 1}"
    assert h.terminate(worker) == 0, worker.stderr()


async def test_the_listener_reconnects_after_its_connection_is_terminated(
    worker_harness: Harness, tmp_path: Path
) -> None:
    import psycopg

    h = worker_harness
    url = _url("postgres", tmp_path)
    _on(h, url)
    worker = h.spawn(APP, KEEL_POLL_INTERVAL="600", **QUIET)
    await h.wait_ready(worker)

    def listeners() -> set[int]:
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND query = 'LISTEN keel_wake'"
            ).fetchall()
        return {r[0] for r in rows}

    await h.wait_until(lambda: len(listeners()) == 1, timeout=WAIT, what="the listener")
    (old,) = listeners()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (old,))
    await h.wait_until(
        lambda: len(listeners() - {old}) == 1, timeout=WAIT, what="a new listener", procs=[worker]
    )

    app = h.app(APP)
    await app.start("waits", {}, id="w2", execute=False)
    await _status(h, "w2", RunStatus.WAITING, [worker])
    await app.signal("w2", "go", 2)
    await _status(h, "w2", RunStatus.SUCCEEDED, [worker])
    err = worker.stderr()
    assert err.count("wake-ups from") == 2, err  # one line when lost, one when back
    assert "password" not in err
    assert h.terminate(worker) == 0, worker.stderr()


async def test_notifications_are_sent_on_commit_only_and_name_the_run(tmp_path: Path) -> None:
    import psycopg

    url = _url("postgres", tmp_path)
    store = open_store(url)
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("LISTEN keel_wake")
            await store.create_run("r1", "triage", b"{}", 0.0)
            [claimed] = await store.claim("w", 30.0, 1, ["triage"])
            await store.suspend_run("r1", "w", None, ["go"], [], 0.0)
            with pytest.raises(keel.SignalRefused):  # refused: nothing committed
                await store.send_signal("r1", "nope", b"1", 0.0, only_if_waiting=True)
            await store.send_signal("r1", "go", b"1", 0.0)
            got = []
            async for note in conn.notifies(timeout=WAIT, stop_after=2):
                got.append(parse_wake(note.payload))
        # The start, then the signal: the suspension set no timer and the refusal
        # committed nothing.
        assert got == [("triage", "r1"), ("triage", "r1")]
        assert claimed.run.id == "r1"
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_next_due_is_the_earliest_timer_of_the_workflows(
    tmp_path: Path, backend: str
) -> None:
    store = open_store(_url(backend, tmp_path))
    try:
        assert await store.next_due(["triage"]) is None
        now = await store.now()
        for run_id, wf, delay in (("a", "triage", 50.0), ("b", "triage", 20.0), ("c", "x", 5.0)):
            await store.create_run(run_id, wf, b"{}", now)
            await store.claim("w", 30.0, 1, [wf], ids=[run_id])
            await store.suspend_run(run_id, "w", now + delay, [], [], now)
        due = await store.next_due(["triage"])
        assert due is not None and 0 < due <= 20.0
        only_a = await store.next_due(["triage"], ids=["a"])
        assert only_a is not None and 20.0 < only_a <= 50.0
        assert await store.next_due(["triage"], ids=[]) is None
        assert await store.next_due([]) is None
    finally:
        await store.close()


async def test_a_long_sleep_wakes_on_its_timer_without_polling(make_app: Any) -> None:
    app = make_app(inline_sleep_max=0.0, poll_max=600, listen_poll=600)

    @app.workflow
    async def naps(ctx: keel.Context) -> str:
        await ctx.sleep(0.5)  # suspends: the worker sleeps until the store says it is due
        return "rested"

    handle = await app.start(naps)
    assert await handle.result(WAIT) == "rested"


class _Feed(WakeFeed):
    def __init__(self, live: bool) -> None:
        self._live = live

    @property
    def live(self) -> bool:
        return self._live

    async def run(self, wake: Any, every: float) -> None:
        await asyncio.Event().wait()


def test_polls_back_off_without_a_live_feed_and_are_a_safety_net_with_one() -> None:
    s = Settings(poll_interval=0.1, poll_max=1.0, listen_poll=30.0)
    pace = Pacer(s, _Feed(live=False))
    assert [pace.wait(None) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    pace.woke()
    assert pace.wait(None) == 0.1
    assert pace.wait(due=0.05) == 0.1  # a due timer never makes it spin
    listening = Pacer(s, _Feed(live=True))
    assert listening.wait(None) == 30.0
    assert listening.wait(due=3.0) == 3.0
    # Executing runs (they wake it as they end): no timer look-up, at most poll_max.
    assert listening.wait(None, busy=True) == 1.0


@pytest.mark.parametrize("name", ["poll_interval", "poll_max", "listen_poll"])
def test_poll_settings_must_be_positive(name: str) -> None:
    with pytest.raises(ConfigError, match=f"setting {name} .KEEL_{name.upper()}. must be"):
        check_pacing(Settings(**{name: 0.0}))


async def test_wake_ups_for_other_workflows_or_runs_do_not_wake_a_worker(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def mine(ctx: keel.Context) -> None:
        return None

    worker = Worker(app.runtime)
    worker._woken("theirs", "r9")
    assert not worker._wake.is_set()
    worker._woken("mine", "r9")
    assert worker._wake.is_set()
    worker._wake.clear()
    worker._woken(None, None)  # the feed cannot say which: look
    assert worker._wake.is_set()

    embedded = Worker(app.runtime, ids={"r1"})
    embedded._woken("mine", "r2")  # its workflow, another process's run
    assert not embedded._wake.is_set()
    embedded._woken("mine", "r1")
    assert embedded._wake.is_set()


async def test_a_burst_of_wake_ups_costs_one_claim(make_app: Any, wait_until: Any) -> None:
    app = make_app(poll_interval=600, poll_max=600, listen_poll=600)

    @app.workflow
    async def mine(ctx: keel.Context) -> None:
        return None

    # Only the test's wake-ups: no feed of the store's (Postgres wakes it once on LISTEN).
    app.store.wake_feed = lambda: None  # type: ignore[method-assign]
    worker = Worker(app.runtime)
    claims = 0
    claim = app.store.claim

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return await claim(*args, **kwargs)

    app.store.claim = counted  # type: ignore[method-assign]
    await worker.start()
    try:
        await wait_until(lambda: claims == 1 and not worker._wake.is_set(), "the first claim")
        for _ in range(1000):
            worker._woken("mine", None)
        await wait_until(lambda: claims >= 2, "the claim the burst asked for")
        for _ in range(20):  # let the loop run on: nothing more is asked of it
            await asyncio.sleep(0)
        assert claims == 2
    finally:
        await worker.stop()
