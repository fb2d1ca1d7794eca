"""Workflows for the crash-recovery and worker tests.

`build(store_url)` returns a fresh App with every workflow registered, so the
test process (which only starts runs and reads the journal) and the worker
subprocesses (`python -m tests.apps.run_worker tests.apps.crash_app`) share
one definition. Tools write to $KEEL_TEST_DIR (see tests/apps/effects.py).
"""

from __future__ import annotations

import asyncio
import os
import random

import keel
from tests.apps.effects import apply_effect, log_execution

BALLAST_BYTES = 64 * 1024  # held across ctx.wait_for by `hold`; a leaked frame would show


def delays(seed: int, n: int) -> list[int]:
    """The per-step tool latency (2-15 ms) for a seed; the test recomputes it."""
    rng = random.Random(seed)
    return [rng.randint(2, 15) for _ in range(n)]


def step_value(i: int, delay_ms: int) -> int:
    return i * 1000 + delay_ms


def build(store: str | None = None) -> keel.App:
    app = keel.App(store)

    @app.tool
    async def work(i: int, delay_ms: int) -> int:
        log_execution()
        await asyncio.sleep(delay_ms / 1000)
        apply_effect()
        return step_value(i, delay_ms)

    @app.tool
    async def item(spec: list[int]) -> int:
        i, delay_ms = spec
        log_execution()
        await asyncio.sleep(delay_ms / 1000)
        apply_effect()
        return step_value(i, delay_ms)

    @app.tool
    async def block(i: int) -> int:
        """Sleeps $KEEL_TEST_BLOCK seconds (set high to hold a step in flight)."""
        log_execution()
        await asyncio.sleep(float(os.environ.get("KEEL_TEST_BLOCK", "0")))
        apply_effect()
        return i

    @app.workflow
    async def steps(ctx: keel.Context, seed: int, n: int = 20) -> list[int]:
        out = []
        for i, ms in enumerate(delays(seed, n)):
            out.append(await ctx.call(work, i, ms))
        return out

    @app.workflow
    async def fanout(
        ctx: keel.Context, seed: int, n: int = 200, concurrency: int = 20
    ) -> list[int]:
        specs = [[i, ms] for i, ms in enumerate(delays(seed, n))]
        res = await ctx.map(item, specs, concurrency=concurrency)
        return list(res.ok)

    @app.workflow
    async def chain_map(
        ctx: keel.Context,
        seed: int,
        n: int = 10,
        items: int = 20,
        concurrency: int = 5,
        slower: int = 1,
    ) -> int:
        """A chain of `n` steps, then a map of `items` (the chaos test's run); each
        step's latency is `delays` times `slower`."""
        total = 0
        for i, ms in enumerate(delays(seed, n)):
            total += await ctx.call(work, i, ms * slower)
        specs = [[n + i, ms * slower] for i, ms in enumerate(delays(seed + 1, items))]
        res = await ctx.map(item, specs, concurrency=concurrency)
        return total + sum(res.ok)

    @app.workflow
    async def nap(ctx: keel.Context, seconds: float) -> list[int]:
        before = await ctx.call(work, 0, 2)
        await ctx.sleep(seconds)
        after = await ctx.call(work, 1, 2)
        return [before, after]

    @app.workflow
    async def short(ctx: keel.Context, k: int, n: int = 4, delay_ms: int = 10) -> int:
        total = 0
        for i in range(n):
            total += await ctx.call(work, i, delay_ms)
        return total + k

    @app.workflow
    async def hold(ctx: keel.Context, n: int) -> int:
        ballast = bytearray(BALLAST_BYTES)  # lives in this frame across the wait
        payload = await ctx.wait_for("go")
        return n + int(payload) + len(ballast)

    @app.workflow
    async def stoppable(ctx: keel.Context) -> list[int]:
        a = await ctx.call(work, 0, 2)
        b = await ctx.call(block, 1)
        c = await ctx.call(work, 2, 2)
        return [a, b, c]

    return app


app = build(os.environ["KEEL_STORE"]) if "KEEL_STORE" in os.environ else None
