"""Workflows for the drain and worker-presence tests, run by the real CLI:
`python -m keel.cli worker tests.apps.worker_app` (the store comes from $KEEL_STORE).

`gated` and `gated_sync` hold their step in flight until the test creates the file
`$KEEL_TEST_DIR/gate-<i>` (see `open_gate`), so a test decides when a step finishes.
Tools write to $KEEL_TEST_DIR (see tests/apps/effects.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import keel
from keel.hitl import Approval
from tests.apps.effects import apply_effect, data_dir, log_execution


def gate(i: int, root: Path | None = None) -> Path:
    return (root or data_dir()) / f"gate-{i}"


def open_gate(root: Path, i: int) -> None:
    gate(i, root).touch()


def build(store: str | None = None) -> keel.App:
    app = keel.App(store)

    @app.tool
    async def work(i: int) -> int:
        log_execution()
        apply_effect()
        return i

    @app.tool
    async def gated(i: int) -> int:
        log_execution()
        while not gate(i).exists():
            await asyncio.sleep(0.01)
        apply_effect()
        return i

    @app.tool
    def gated_sync(i: int) -> int:
        """The same, blocking a thread: a cancelled step cannot stop it."""
        log_execution()
        while not gate(i).exists():
            time.sleep(0.01)
        apply_effect()
        return i

    @app.workflow
    async def drainable(ctx: keel.Context, sync: bool = False) -> list[int]:
        a = await ctx.call(work, 0)
        b = await ctx.call(gated_sync if sync else gated, 1)
        c = await ctx.call(work, 2)
        return [a, b, c]

    @app.workflow
    async def fan(ctx: keel.Context, n: int, concurrency: int) -> list[int]:
        res = await ctx.map(gated, list(range(n)), concurrency=concurrency)
        return list(res.ok)

    @app.tool(retry=keel.Retry(attempts=2, backoff=4, jitter=False))
    async def flaky(i: int) -> int:
        """Fails its first attempt (a transient error), then waits 4 s (in memory) to retry."""
        log_execution()
        step = keel.current_step()
        if step is not None and step.attempt == 1:
            raise ConnectionError("connection reset")
        return i

    @app.workflow
    async def retried(ctx: keel.Context) -> int:
        return await ctx.call(flaky, 1)

    @app.tool(approval=Approval(queue="grants", reason="grants need a person"))
    async def grant(n: int) -> int:
        log_execution()
        apply_effect()
        return n

    @app.workflow
    async def granted(ctx: keel.Context, n: int) -> int:
        return await ctx.call(grant, n)

    @app.tool(retry=keel.Retry(attempts=1), fallback=keel.Fallback.human(queue="ops"))
    async def lookup(n: int) -> int:
        raise RuntimeError("503 from the lookup service")

    @app.workflow
    async def escalated(ctx: keel.Context, n: int) -> int:
        return await ctx.call(lookup, n)

    @app.workflow
    async def signalled(ctx: keel.Context) -> Any:
        return await ctx.wait_for("go")

    return app


app = build(os.environ["KEEL_STORE"]) if "KEEL_STORE" in os.environ else None
