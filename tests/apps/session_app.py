"""A workflow that counts in its session by compare-and-set, for SIGKILL tests
(tests/test_memory_session.py): every increment must land exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import keel


def build(store_url: str, session_store: Any = None) -> keel.App:
    # The worker subprocess takes its session store from KEEL_SESSION_STORE.
    app = keel.App(store_url, session_store=session_store)

    @app.tool
    async def pause(i: int) -> int:
        await asyncio.sleep(0.02)  # something in flight between increments to kill
        return i

    @app.workflow
    async def count(ctx: keel.Context, n: int) -> int:
        for i in range(n):
            while True:
                cur = await ctx.session.get("count")
                if await ctx.session.compare_and_set("count", cur, (cur or 0) + 1):
                    break
            await ctx.session.set(f"seen-{i}", i)
            await ctx.call(pause, i)
        return n

    return app
