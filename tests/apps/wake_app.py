"""A workflow that waits for a signal, for the cross-process wake-up tests and bench:
`python -m tests.apps.run_worker tests.apps.wake_app` (the store from $KEEL_STORE)."""

from __future__ import annotations

import keel


def build(store: str | None = None) -> keel.App:
    app = keel.App(store)

    @app.tool
    async def record(value: str) -> str:
        return value

    @app.workflow
    async def waits(ctx: keel.Context) -> str:
        got = await ctx.wait_for("go")
        return await ctx.call(record, f"got {got}")

    return app
