"""An irreversible tool with a person as its fallback, for SIGKILL tests of an unknown
outcome: the worker dies after the intent is journaled and the effect happened."""

from __future__ import annotations

import asyncio

import keel
from tests.apps.effects import apply_effect, data_dir, log_execution


def build(store: str | None = None) -> keel.App:
    app = keel.App(store)

    @app.tool(irreversible=True, approval=False, fallback=keel.Fallback.human(queue="payments"))
    async def wire(amount: int) -> str:
        key = log_execution()
        apply_effect()
        (data_dir() / "in-flight").touch()
        await asyncio.sleep(3600)  # the worker is SIGKILLed here
        return f"tx-for-{key}"

    @app.workflow
    async def pay(ctx: keel.Context, amount: int) -> str:
        try:
            receipt = await ctx.call(wire, amount)
        except keel.EscalationRejected as e:
            return f"not paid: {e.error.message}"
        return f"paid: {receipt}"

    return app
