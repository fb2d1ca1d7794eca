"""A workflow using ctx.memory, for the SIGKILL test (tests/test_memory_crash.py).

`writes` adds, adds many and supersedes; with $KEEL_TEST_DIE_AFTER_WRITE=N the worker
SIGKILLs itself right after its Nth memory write commits, before it is journaled.
`recall` searches, writes two memories and supersedes one, then calls `hold`, which
logs `hold <pid>` to $KEEL_TEST_DIR/memory.log and sleeps $KEEL_TEST_BLOCK seconds (the
kill point: the memory steps before it are journaled). It embeds with the
deterministic test embedder: the test is about replay and exactly-once, not ranking.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import keel
from tests.memory_embedders import HashedWords

NS = "ada"


def _die_after_writes(count: int) -> None:
    """SIGKILL this worker right after its `count`th memory write commits, before the
    step's journal entry: the window in which a write is done but not known to be."""
    from keel.memory.api import Memory

    write, supersede, seen = Memory._write, Memory._supersede, [0]

    def after(out: Any) -> Any:
        seen[0] += 1
        if seen[0] == count:
            out_dir = os.environ.get("KEEL_TEST_DIR")
            if out_dir:
                with open(Path(out_dir) / "memory.log", "a") as f:
                    f.write(f"written {os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    async def write_then_die(self: Memory, *a: Any, **kw: Any) -> Any:
        return after(await write(self, *a, **kw))

    async def supersede_then_die(self: Memory, *a: Any, **kw: Any) -> Any:
        return after(await supersede(self, *a, **kw))

    Memory._write = write_then_die  # type: ignore[method-assign]
    Memory._supersede = supersede_then_die  # type: ignore[method-assign]


def build(store: str | None = None) -> keel.App:
    app = keel.App(store, embedder=HashedWords())
    if os.environ.get("KEEL_TEST_DIE_AFTER_WRITE"):
        _die_after_writes(int(os.environ["KEEL_TEST_DIE_AFTER_WRITE"]))

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

    @app.workflow
    async def writes(ctx: keel.Context, old_id: str) -> dict[str, Any]:
        one = await ctx.memory.add("written once: add", namespace=NS)
        many = await ctx.memory.add_many(["written once: a", "written once: b"], namespace=NS)
        new_id = await ctx.memory.supersede(old_id, "written once: superseding")
        return {"add": one, "add_many": many, "supersede": new_id}

    return app
