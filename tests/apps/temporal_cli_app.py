"""An App the CLI drives on Temporal (tests/test_temporal_cli.py):

keel worker tests.apps.temporal_cli_app --backend temporal://...
"""

from __future__ import annotations

import keel

app = keel.App()  # KEEL_STORE: the test's store, shared by the worker and the CLI


@app.tool
async def greet_tool(name: str) -> str:
    return f"hello {name}"


@app.workflow
async def greet(ctx: keel.Context, name: str) -> str:
    return await ctx.call(greet_tool, name)


@app.workflow
async def approve(ctx: keel.Context, name: str) -> str:
    hello = await ctx.call(greet_tool, name)
    by = await ctx.wait_for("go", timeout=3600)
    ctx.now()  # a value the workflow decides: `keel show --app` lists it
    return f"{hello}, approved by {by['by']}"


@app.workflow
async def broken(ctx: keel.Context, why: str) -> str:
    raise ValueError(why)


@app.workflow
async def nap(ctx: keel.Context, seconds: float) -> str:
    await ctx.sleep(seconds)
    return "rested"
