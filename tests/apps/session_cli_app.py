"""A workflow counting visits in its session, for `keel run --session` tests."""

from __future__ import annotations

import keel

app = keel.App()


@app.workflow
async def visit(ctx: keel.Context) -> int:
    n = int(await ctx.session.get("visits", 0)) + 1
    await ctx.session.set("visits", n)
    return n
