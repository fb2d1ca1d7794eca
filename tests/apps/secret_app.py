"""A workflow that takes credentials as `keel.Secret`s and passes them to a tool.

The tool reveals both (one from the environment, one from a source the App registers)
and appends what it got to $KEEL_TEST_DIR/revealed.log, so a test can check the value
every execution of the step saw; $KEEL_TEST_BLOCK seconds then hold it in flight.
"""

from __future__ import annotations

import asyncio
import os

import keel
from tests.apps.effects import apply_effect, data_dir, log_execution


def vault(name: str) -> str | None:
    """A stand-in for a secrets manager: TEST_VAULT_<NAME> in the worker's environment."""
    return os.environ.get(f"TEST_VAULT_{name.upper()}")


def build(store: str | None = None) -> keel.App:
    app = keel.App(store)
    app.secrets.register("vault", vault)

    @app.tool
    async def quote(amount: int) -> int:
        return amount * 100

    @app.tool
    async def charge(api_key: keel.Secret, db: keel.Secret, cents: int) -> str:
        log_execution()
        with open(data_dir() / "revealed.log", "a") as f:
            f.write(f"{api_key.reveal()} {db.reveal()} {os.getpid()}\n")
        await asyncio.sleep(float(os.environ.get("KEEL_TEST_BLOCK", "0")))
        apply_effect()
        return f"charged {cents} with {api_key}"

    @app.workflow
    async def pay(ctx: keel.Context, api_key: keel.Secret, db: keel.Secret, amount: int) -> str:
        cents = await ctx.call(quote, amount)
        return await ctx.call(charge, api_key, db, cents)  # type: ignore[no-any-return]

    return app
