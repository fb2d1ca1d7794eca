"""Workflows for the retention tests, run by the real CLI:
`python -m keel.cli worker tests.apps.retention_app` (the store comes from $KEEL_STORE).

`chain` journals `n` steps, the first with an output large enough to be stored out of
line; every run's large output is the same, so all of them share one blob. `held` holds
its second step until the test creates `$KEEL_TEST_DIR/gate-<i>`; `waits` waits for a
signal. Every `work` step logs its execution (tests/apps/effects.py).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import keel
from tests.apps.effects import log_execution

BIG = "x" * (300 * 1024)  # over the 256 KiB large_output_bytes default: a shared blob


def gate(i: int, root: Path | None = None) -> Path:
    return (root or Path(os.environ["KEEL_TEST_DIR"])) / f"gate-{i}"


def build(store: str | None = None) -> keel.App:
    app = keel.App(store)

    @app.tool
    async def big(i: int) -> str:
        return BIG

    @app.tool
    async def work(i: int) -> int:
        log_execution()  # $KEEL_TEST_DIR/exec.log: which steps ran, how often
        await asyncio.sleep(0.005)
        return i

    @app.tool
    async def hold(i: int) -> int:
        while not gate(i).exists():
            await asyncio.sleep(0.01)
        return i

    @app.workflow
    async def chain(ctx: keel.Context, n: int = 4) -> int:
        await ctx.call(big, 0)
        total = 0
        for i in range(1, n):
            total += await ctx.call(work, i)
        return total

    @app.workflow
    async def held(ctx: keel.Context, i: int) -> int:
        await ctx.call(work, 0)
        await ctx.call(hold, i)
        return await ctx.call(work, 1)

    @app.workflow
    async def waits(ctx: keel.Context) -> Any:
        return await ctx.wait_for("go")

    return app


app = build(os.environ["KEEL_STORE"]) if "KEEL_STORE" in os.environ else None
