"""A workflow whose shape comes from the environment, so one test can kill a worker
running one version and resume the run in a worker running another.

KEEL_TEST_STEPS: how many `work` steps `steps` makes; KEEL_TEST_ITEMS: how many items
`fan` maps; KEEL_TEST_BLOCK_AT: the step/item index that blocks until the test kills
the worker (unset: none blocks).
"""

from __future__ import annotations

import asyncio
import os

import keel
from tests.apps.effects import apply_effect, data_dir, log_execution


def _n(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


async def _maybe_block(i: int) -> None:
    if i == _n("KEEL_TEST_BLOCK_AT", -1):
        (data_dir() / f"blocked-{i}").touch()
        await asyncio.sleep(3600)  # until SIGKILL


def build(store: str | None = None) -> keel.App:
    app = keel.App(store)

    @app.tool
    async def work(i: int) -> int:
        log_execution()
        await _maybe_block(i)
        apply_effect()
        return i

    @app.workflow
    async def steps(ctx: keel.Context) -> list[int]:
        return [await ctx.call(work, i) for i in range(_n("KEEL_TEST_STEPS", 10))]

    @app.workflow
    async def fan(ctx: keel.Context) -> list[int | None]:
        res = await ctx.map(work, range(_n("KEEL_TEST_ITEMS", 10)), concurrency=1)
        return list(res)

    return app
