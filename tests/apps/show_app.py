"""Workflows for `keel show` tests: state changed after each step, a list that grows
by patches, and a map whose items wait until the test releases them."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel, Field

import keel

app = keel.App()


class Notes(BaseModel):
    stage: str = ""
    count: int = 0
    log: list[str] = Field(default_factory=list)
    verdict: str = ""


@app.tool
async def fetch(n: int) -> int:
    return n * 10


@app.tool
async def hold(x: int, release: str) -> int:
    """Items from 2 on wait until the file `release` exists (the test creates it)."""
    while x >= 2 and not os.path.exists(release):
        await asyncio.sleep(0.05)
    return x


@app.workflow(state=Notes)
async def staged(ctx: keel.Context) -> int:
    a = await ctx.call(fetch, 1)
    ctx.state.stage = f"fetched {a}"  # after step 1
    b = await ctx.call(fetch, 2)
    ctx.state.count = a + b  # after step 2
    c = await ctx.call(fetch, 3)
    ctx.state.stage = "done"  # after the last step: only in the run's final state
    ctx.state.verdict = f"total {a + b + c}"
    return a + b + c


@app.workflow(state=Notes)
async def grows(ctx: keel.Context, n: int = 50) -> int:
    for i in range(n):
        ctx.state.log.append(f"entry {i}")  # journaled as an append patch
        await ctx.call(fetch, i)
    ctx.state.log.append("end")
    return len(ctx.state.log)


async def part(ctx: keel.Context, item: dict[str, Any]) -> int:
    ctx.state.stage = f"part {item['x']}"
    got: int = await ctx.call(hold, item["x"], item["release"])
    return got


@app.workflow(state=Notes)
async def held(ctx: keel.Context, release: str, n: int = 4) -> list[int]:
    ctx.state.stage = "mapping"
    await ctx.call(fetch, 0)
    res = await ctx.map(part, [{"x": i, "release": release} for i in range(n)])
    ctx.state.count = sum(res.ok)
    return list(res.ok)
