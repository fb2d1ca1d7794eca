"""Claims that spread work: run slots (`--max-runs`) and step slots (`--max-steps`).

A worker claims only up to its free run slots, so every worker gets runs; a process
runs at most `max_steps` step effects at once, each holding its slot until its
outcome is journaled, so it never holds more done-but-unjournaled effects than that.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import keel
from keel import config
from keel.engine.slots import StepSlots
from keel.errors import ConfigError
from keel.store import UnitOfWork
from keel.types import StepKind, StepStatus
from tests.apps.harness import Harness
from tests.limits import WAIT

SPREAD_RUNS = 30
SPREAD_WORKERS = 3


@pytest.mark.slow
async def test_runs_spread_over_every_worker(worker_harness: Harness) -> None:
    h = worker_harness
    h.base_env["KEEL_LEASE_SECONDS"] = "30"  # every worker stays live: no lease expires
    app = h.app()
    workers = [
        h.spawn_keel("worker", "tests.apps.crash_app", "--max-runs", "2")
        for _ in range(SPREAD_WORKERS)
    ]
    for w in workers:
        await h.wait_beat(w)
    ids = [f"spread-{k:02d}" for k in range(SPREAD_RUNS)]
    for k, run_id in enumerate(ids):
        await app.start("short", {"k": k, "n": 4, "delay_ms": 20}, id=run_id, execute=False)

    await h.wait_until(
        lambda: h.status_counts().get("SUCCEEDED", 0) == SPREAD_RUNS,
        timeout=WAIT,
        what=f"{SPREAD_RUNS} runs to succeed",
        procs=workers,
    )
    by_run: dict[str, set[int]] = {}
    for key, pid in h.executions():
        by_run.setdefault(key.split(":", 1)[0], set()).add(pid)
    spread = Counter(pid for pids in by_run.values() for pid in pids)
    print(f"spread of {SPREAD_RUNS} runs over {SPREAD_WORKERS} workers: {sorted(spread.values())}")
    assert all(len(pids) == 1 for pids in by_run.values()), by_run
    assert set(spread) == {w.pid for w in workers}, spread  # every worker ran some runs
    assert h.effect_dupes() == []
    for w in workers:
        assert h.terminate(w) == 0, w.stderr()


MAP_ITEMS = 40
MAX_STEPS = 4


async def test_step_slots_bound_effects_running_and_unjournaled(make_app: Any) -> None:
    app: keel.App = make_app(max_steps=MAX_STEPS)
    running = 0
    peak_running = 0
    unjournaled = 0  # effects returned whose step is not committed yet
    peak_unjournaled = 0

    @app.tool
    async def item(i: int) -> int:
        nonlocal running, peak_running, unjournaled, peak_unjournaled
        running += 1
        peak_running = max(peak_running, running)
        await asyncio.sleep(0.005)
        running -= 1
        unjournaled += 1
        peak_unjournaled = max(peak_unjournaled, unjournaled)
        return i

    @app.workflow
    async def fan(ctx: keel.Context, n: int) -> int:
        res = await ctx.map(item, list(range(n)))  # no map limit: only the step slots
        return sum(res.values)

    store = app.runtime.store
    commit = store.commit

    async def journaled(uow: UnitOfWork) -> Any:
        nonlocal unjournaled
        await asyncio.sleep(0.002)  # a slow store: done effects pile up before their commit
        done = await commit(uow)
        for w in uow.steps:
            rec = w.record
            if rec.kind is StepKind.TOOL and rec.status is StepStatus.OK:
                unjournaled -= 1
        return done

    store.commit = journaled  # type: ignore[method-assign]
    handle = await app.start(fan, {"n": MAP_ITEMS})
    assert await handle.result(WAIT) == sum(range(MAP_ITEMS))
    assert unjournaled == 0
    print(f"max_steps={MAX_STEPS}: peak running {peak_running}, unjournaled {peak_unjournaled}")
    assert 2 <= peak_running <= MAX_STEPS  # bounded, yet not one at a time
    assert 2 <= peak_unjournaled <= MAX_STEPS  # (2: the instrument does see them)
    assert app.runtime.step_slots().peak <= MAX_STEPS


async def test_parents_and_backoffs_hold_no_slot(make_app: Any) -> None:
    """One slot, map children that each make two calls, a retried call: no deadlock."""
    app: keel.App = make_app(max_steps=1)
    failed: set[int] = set()

    @app.tool(retry=keel.Retry(attempts=2, backoff=0.01, jitter=False))
    async def flaky(i: int) -> int:
        if i not in failed:  # the first attempt fails: its backoff must free the slot
            failed.add(i)
            raise ConnectionError("connection reset")
        return i

    @app.tool
    async def double(i: int) -> int:
        return 2 * i

    async def child(ctx: keel.Context, i: int) -> int:
        return await ctx.call(double, await ctx.call(flaky, i))

    @app.workflow
    async def nested(ctx: keel.Context, n: int) -> int:
        res = await ctx.map(child, list(range(n)))
        return sum(res.values)

    handle = await app.start(nested, {"n": 6})
    assert await handle.result(WAIT) == 2 * sum(range(6))
    assert app.runtime.step_slots().peak == 1


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    slots = StepSlots(1)
    held = await slots.take()
    waiter = asyncio.ensure_future(slots.take())
    other = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0)
    waiter.cancel()
    held.give_back()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    (await other).give_back()
    assert slots.busy == 0


# -- bad values ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["max_runs", "max_steps"])
@pytest.mark.parametrize("raw", ["0", "-3", "2.5", "many", ""])
def test_bad_limits_in_the_environment_name_the_setting(
    name: str, raw: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(f"KEEL_{name.upper()}", raw)
    with pytest.raises(ConfigError, match=rf"{name} \(KEEL_{name.upper()}\) must be a whole"):
        config.load(config_file=tmp_path / "keel.toml")


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "true", '"x"'])
def test_bad_limits_in_keel_toml_name_the_setting(
    value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KEEL_MAX_STEPS", raising=False)
    (tmp_path / "keel.toml").write_text(f"[keel]\nmax_steps = {value}\n")
    with pytest.raises(ConfigError, match=r"max_steps \(KEEL_MAX_STEPS\) must be a whole"):
        config.load(config_file=tmp_path / "keel.toml")


def test_limits_from_the_environment_and_the_old_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("KEEL_MAX_RUNS", "KEEL_MAX_STEPS", "KEEL_CONCURRENCY"):
        monkeypatch.delenv(var, raising=False)
    _, settings = config.load(config_file=tmp_path / "keel.toml")
    assert (settings.max_runs, settings.max_steps) == (16, 256)
    monkeypatch.setenv("KEEL_CONCURRENCY", "5")  # its name before --max-runs
    monkeypatch.setenv("KEEL_MAX_STEPS", "8")
    _, settings = config.load(config_file=tmp_path / "keel.toml")
    assert (settings.max_runs, settings.max_steps) == (5, 8)


def test_bad_limits_in_code_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="max_steps must be a whole number >= 1, got 0"):
        StepSlots(0)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-runs", "0"], "--max-runs"),
        (["--max-runs", "-2"], "--max-runs"),
        (["--max-steps", "0"], "--max-steps"),
        (["--max-steps", "1.5"], "--max-steps"),
        (["--max-steps", "lots"], "--max-steps"),
    ],
)
def test_bad_limits_on_the_command_line_name_the_option(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    app = str(Path(__file__).parent / "apps" / "cli_app.py")
    proc = subprocess.run(
        [sys.executable, "-m", "keel.cli", "worker", app, *args],
        capture_output=True,
        cwd=tmp_path,
        env={**os.environ, "KEEL_STORE": f"sqlite:///{tmp_path / 'keel.db'}"},
        timeout=WAIT,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    assert needle in err, err
