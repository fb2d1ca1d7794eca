"""A small app for CLI tests: a fan-out, a signal wait and a failing workflow."""

from __future__ import annotations

import asyncio

import keel

app = keel.App()


@app.tool()
async def double(i: int) -> int:
    await asyncio.sleep(0.001)
    return i * 2


@app.workflow()
async def fan(ctx: keel.Context, n: int = 5) -> int:
    res = await ctx.map(double, range(n), concurrency=3)
    return sum(v for v in res.values if v is not None)


@app.workflow()
async def waits(ctx: keel.Context) -> str:
    got = await ctx.wait_for("go")
    return f"got {got}"


@app.workflow()
async def broken(ctx: keel.Context) -> None:
    raise RuntimeError("boom")
