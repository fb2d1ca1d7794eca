"""Workflows for the store-fault tests (tests/test_store_faults*.py), run by the real CLI:
`python -m keel.cli worker tests/apps/faults_app.py` (the store comes from $KEEL_STORE).

`chain` is `n` steps one after another; `fan` is a map of `n` items. Each step sleeps
$KEEL_TEST_STEP seconds (default 0.05), so runs are in flight while a test breaks the
store, then performs its effect once per idempotency key (tests/apps/effects.py).
"""

from __future__ import annotations

import asyncio
import os

import keel
from tests.apps.effects import apply_effect, log_execution

_PAUSE = float(os.environ.get("KEEL_TEST_STEP", "0.05") or 0.05)


def build(store: str | None = None) -> keel.App:
    app = keel.App(store)

    @app.tool
    async def work(i: int) -> int:
        log_execution()
        await asyncio.sleep(_PAUSE)
        apply_effect()
        return i

    @app.workflow
    async def chain(ctx: keel.Context, n: int) -> int:
        total = 0
        for i in range(n):
            total += await ctx.call(work, i)
        return total

    @app.workflow
    async def fan(ctx: keel.Context, n: int) -> int:
        res = await ctx.map(work, list(range(n)), concurrency=4)
        return sum(res.ok)

    @app.workflow
    async def waits(ctx: keel.Context) -> int:
        got = await ctx.wait_for("go")
        return int(got)

    return app


app = build(os.environ["KEEL_STORE"]) if "KEEL_STORE" in os.environ else None
