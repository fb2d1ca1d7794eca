"""A workflow using ctx.memory, for the SIGKILL test (tests/test_memory_crash.py).

`recall` searches, writes two memories and supersedes one, then calls `hold`, which
logs `hold <pid>` to $KEEL_TEST_DIR/memory.log and sleeps $KEEL_TEST_BLOCK seconds (the
kill point: the memory steps before it are journaled). It embeds with the
deterministic test embedder: the test is about replay and exactly-once, not ranking.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import keel
from tests.memory_embedders import HashedWords

NS = "ada"


def build(store: str | None = None) -> keel.App:
    app = keel.App(store, embedder=HashedWords())

    @app.tool
    async def hold() -> int:
        out = os.environ.get("KEEL_TEST_DIR")
        if out:
            with open(Path(out) / "memory.log", "a") as f:
                f.write(f"hold {os.getpid()}\n")
        await asyncio.sleep(float(os.environ.get("KEEL_TEST_BLOCK", "0")))
        return os.getpid()

    @app.workflow
    async def recall(ctx: keel.Context, old_id: str) -> dict[str, Any]:
        hits = await ctx.memory.search("green tea", namespace=NS, k=3)
        ids = await ctx.memory.add_many(["run fact one", "run fact two"], namespace=NS)
        new_id = await ctx.memory.supersede(old_id, "Ada now drinks coffee")
        await ctx.call(hold)
        again = await ctx.memory.search("green tea", namespace=NS, k=3)
        return {
            "hits": [[h.id, h.text, h.score, h.digest] for h in hits],
            "again": [h.text for h in again],
            "ids": ids,
            "new_id": new_id,
        }

    return app
