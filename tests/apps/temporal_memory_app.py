"""`ctx.memory.forget` served by a Temporal worker in a subprocess (tests/test_temporal_crash.py).

    python -m keel.backends.temporal tests.apps.temporal_memory_app --backend temporal://...

With `KEEL_TEST_DIE=forget` the worker SIGKILLs itself right after the memory store
deleted the memory, before the forget's outcome is recorded anywhere: between its
intent and its outcome, as far as Keel and Temporal can tell.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import keel
from tests.memory_embedders import HashedWords


async def forget_later(ctx: keel.Context, user: str) -> str:
    memory_id = await ctx.memory.add(f"{user} likes chess", namespace=user)
    await ctx.wait_for("go", timeout=3600)  # the test sends it once the add is in history
    await ctx.memory.forget(memory_id)
    return memory_id


def build(store: str | None = None) -> keel.App:
    """The App on `store` (None: KEEL_STORE, which the test sets for the worker too)."""
    app = keel.App(store, embedder=HashedWords())
    app.workflow(forget_later)
    if os.environ.get("KEEL_TEST_DIE") == "forget":
        memory = app.memory
        forget = memory.forget

        async def forget_then_die(memory_id: str, **kw: Any) -> None:
            await forget(memory_id, **kw)
            os.kill(os.getpid(), signal.SIGKILL)

        memory.forget = forget_then_die  # type: ignore[method-assign]
    return app


app = build()
