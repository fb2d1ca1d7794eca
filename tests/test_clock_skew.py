"""Leases and timers are measured on the database clock, not a worker's: a worker whose
clock is an hour off can neither take a live lease nor move a durable timer.

A worker's clock is `time.time()` in its process; the store's is SQLite's own (C-level,
which patching `time.time` does not touch), so patching it is exactly a skewed worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import keel
from keel.types import StepKind
from tests.backends import sql
from tests.limits import WAIT

HOUR = 3600.0
SLEEP = 600.0


def _skew(monkeypatch: pytest.MonkeyPatch, by: float) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + by)


@pytest.mark.parametrize("skew", [HOUR, -HOUR])
async def test_a_skewed_worker_does_not_take_a_live_lease(
    make_app: Callable[..., keel.App], monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    app = make_app()

    @app.workflow
    async def held(ctx: keel.Context) -> str:
        return "done"

    await app.start(held, id="held-1", execute=False)
    # Another worker holds it under a 30 s lease, taken on the database clock.
    [claimed] = await app.store.claim("other-worker", 30.0, 1, ["held"])
    assert claimed.run.id == "held-1"
    _skew(monkeypatch, skew)
    worker = app.worker()
    await worker.start()
    try:
        # +1 h: the lease looks expired to this worker's clock; it must not matter.
        assert await worker._claim(10) == 0
    finally:
        await worker.stop()
    run = await app.get_run("held-1")
    assert run is not None and run.lease_owner == "other-worker"
    # Renewing from the skewed clock keeps the lease about 30 s ahead of the database.
    assert await app.store.renew("other-worker", ["held-1"], 30.0) == {"held-1"}
    # How far ahead of the database clock the lease now ends: no interface shows a
    # lease's end, so this reads the column.
    [row] = sql(app.store.url, "SELECT lease_expires - {now} FROM runs")  # type: ignore[attr-defined]
    assert 0 < float(row[0]) <= 30.0


@pytest.mark.parametrize("skew", [HOUR, -HOUR])
async def test_a_skewed_worker_does_not_move_a_durable_timer(
    make_app: Callable[..., keel.App], monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    app = make_app(inline_sleep_max=0.0)

    @app.workflow
    async def sleeper(ctx: keel.Context) -> str:
        await ctx.sleep(SLEEP)
        return "woke"

    _skew(monkeypatch, skew)
    handle = await app.start(sleeper)
    assert (await handle.settle(WAIT)).status is keel.RunStatus.WAITING
    db_now = await app.store.now()
    run = await app.get_run(handle.id)
    assert run is not None and run.wake_at is not None
    # Due SLEEP seconds after the database's now, not the skewed clock's: -1 h would
    # have woken it at once, +1 h an hour late. (The margin is far below the skew; the
    # 10 ms above SLEEP is the resolution of SQLite's julianday('now') clock, read twice.)
    assert SLEEP - HOUR / 4 < run.wake_at - db_now <= SLEEP + 0.01
    worker = app.worker()
    await worker.start()
    try:
        assert await worker._claim(10) == 0  # not due on the database clock
    finally:
        await worker.stop()
    await handle.cancel()


@pytest.mark.parametrize("skew", [HOUR, -HOUR])
async def test_a_skewed_worker_sets_timers_on_the_database_clock(
    make_app: Callable[..., keel.App], monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    """The engine's clock follows the store's, so the journal's timer and the run's agree
    and a second worker, skewed otherwise, hands the same timer on unchanged."""
    app = make_app(inline_sleep_max=0.0)

    @app.workflow
    async def sleeper(ctx: keel.Context) -> str:
        await ctx.sleep(SLEEP)
        return "woke"

    _skew(monkeypatch, skew)
    handle = await app.start(sleeper)
    assert (await handle.settle(WAIT)).status is keel.RunStatus.WAITING
    # The worker measured the store's clock: its own is an hour off, the engine's is not.
    assert abs(app.runtime.clock() - await app.store.now()) < HOUR / 60
    run = await app.get_run(handle.id)
    [entry] = [s for s in await app.store.load_steps(handle.id) if s.kind is StepKind.SLEEP]
    assert run is not None and run.wake_at is not None and entry.wake_at is not None
    assert run.wake_at == pytest.approx(entry.wake_at, abs=1.0)
    # (+50 ms: the engine's clock is the store's as measured over a round trip, and the
    # store's julianday('now') has millisecond resolution; a CI run saw 0.4 ms over)
    assert SLEEP - HOUR / 60 < entry.wake_at - await app.store.now() <= SLEEP + 0.05
    await handle.cancel()
