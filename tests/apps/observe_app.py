"""A workflow for the tracing crash test (tests/test_observe_replay.py).

`traced` journals a step, suspends on a signal, and after the signal runs a step,
then `block` (which sleeps $KEEL_TEST_BLOCK seconds: a worker can be SIGKILLed
while it is in flight), then a last step. Workers run it with
`python -m tests.apps.run_worker tests.apps.observe_app`.
"""

from __future__ import annotations

import asyncio
import os

import keel
from tests.apps.effects import log_execution


def build(store: str | None = None) -> keel.App:
    app = keel.App(store)

    @app.tool
    async def work(i: int) -> int:
        log_execution()
        return i * 10

    @app.tool
    async def block(i: int) -> int:
        log_execution()
        await asyncio.sleep(float(os.environ.get("KEEL_TEST_BLOCK", "0")))
        return i

    @app.workflow
    async def traced(ctx: keel.Context) -> list[int]:
        a = await ctx.call(work, 0)
        extra = await ctx.wait_for("go")
        b = await ctx.call(work, int(extra))
        c = await ctx.call(block, 2)
        d = await ctx.call(work, 3)
        return [a, b, c, d]

    return app
