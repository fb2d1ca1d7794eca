"""Keel side of the benchmark; runs with the repo's own venv (.venv).

Settings: Keel's default SQLite store on a file DB (WAL, synchronous=NORMAL:
a committed step survives a kill of the process; an OS crash may lose the
last few commits, as with any WAL+NORMAL database); with `--pg URL`, Keel's
Postgres store on that database, with its defaults (a pool of up to 8
connections). Every `ctx.call` is a journaled durable step; `ctx.wait_for`
suspends the run durably, so a waiting run holds no coroutine in the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _common import NAP_S, SIGNAL_PAYLOAD, W1_BLOB, W1_STEPS, W3_STEPS, main
from pydantic import BaseModel

import keel

POLL_S = 0.02  # W4: how often to re-check runs that are not parked yet
PARK_TIMEOUT_S = 60.0  # W4: fail with a diagnosis well before the harness's kill
WAITING = keel.RunStatus.WAITING
TOOL_CALLS: Counter[str] = Counter()  # per process: how W3's worker processes split the work


class BlobState(BaseModel):
    blob: str = ""


def build_app(store: str) -> tuple[keel.App, dict[str, Any]]:
    """The bench's App on `store` and its workflows by workload (W3's workers use it too)."""
    app = keel.App(store=store)

    @app.tool()
    async def noop(i: int) -> int:
        TOOL_CALLS["noop"] += 1
        return i

    @app.tool()
    async def nap(i: int) -> int:
        await asyncio.sleep(NAP_S)
        return i

    @app.workflow(state=BlobState)
    async def sequential(ctx: keel.Context, n: int) -> int:
        ctx.state.blob = W1_BLOB  # the ~1 KB of state W1 carries
        for i in range(n):
            await ctx.call(noop, i)
        return n

    @app.workflow()
    async def steps(ctx: keel.Context, n: int) -> int:
        for i in range(n):
            await ctx.call(noop, i)
        return n

    @app.workflow()
    async def fan_out(ctx: keel.Context, n: int) -> int:
        res = await ctx.map(nap, list(range(n)))  # unbounded concurrency
        return sum(res.values)

    @app.workflow()
    async def wait_for_go(ctx: keel.Context) -> str:
        payload: str = await ctx.wait_for("go")
        return payload

    return app, {"w1": sequential, "w2": fan_out, "w3": steps, "w4": wait_for_go}


class KeelAdapter:
    """Builds one App per process; the store URL is only known at open()."""

    def __init__(self) -> None:
        self._app: keel.App | None = None
        self._flows: dict[str, Any] = {}

    @property
    def app(self) -> keel.App:
        assert self._app is not None, "open() first"
        return self._app

    async def open(self, workdir: Path, pg: str | None = None) -> None:
        self._app, self._flows = build_app(pg or f"sqlite:///{workdir / 'keel.db'}")

    async def close(self) -> None:
        if self._app is not None:
            await self._app.close()

    async def _run(self, flow: str, inputs: dict[str, Any]) -> Any:
        handle = await self.app.start(self._flows[flow], inputs)
        return await handle.result()

    async def w1(self) -> None:
        await self._run("w1", {"n": W1_STEPS})

    async def w2(self, n: int) -> int:
        return int(await self._run("w2", {"n": n}))

    async def w3(self) -> None:
        await self._run("w3", {"n": W3_STEPS})

    async def w4_start(self, i: int) -> Any:
        return await self.app.start(self._flows["w4"], {})

    async def w4_wait_suspended(self, handles: Sequence[Any]) -> None:
        # One listing per poll, as DBOS's side does: 1,000 get_run calls a round would
        # load the store (on Postgres, 1,000 pool checkouts) more than the runs do.
        pending = {h.id for h in handles}
        deadline = time.monotonic() + PARK_TIMEOUT_S
        while True:
            runs = await self.app.list_runs(workflow="wait_for_go", limit=len(handles) + 10)
            mine = [r for r in runs if r.id in pending]
            if any(r.status.terminal for r in mine):
                raise AssertionError("a W4 run finished before it was signalled")
            pending -= {r.id for r in mine if r.status == WAITING}
            if not pending:
                return
            if time.monotonic() > deadline:
                # Say which state they are stuck in: that is the bug to chase.
                stuck = Counter(str(r.status) for r in mine if r.id in pending)
                raise TimeoutError(
                    f"{len(pending)} runs not WAITING after {PARK_TIMEOUT_S:g} s: {dict(stuck)}"
                )
            await asyncio.sleep(POLL_S)

    async def w4_resume(self, handle: Any) -> None:
        await self.app.signal(handle.id, "go", payload=SIGNAL_PAYLOAD)
        if await handle.result() != SIGNAL_PAYLOAD:
            raise AssertionError("run finished without the signal payload")


def _versions() -> dict[str, str]:
    try:
        return {"keel": version("keel"), "pydantic": version("pydantic")}
    except Exception:  # keel used from the source tree, not installed
        return {"keel": getattr(keel, "__version__", "source"), "pydantic": version("pydantic")}


if __name__ == "__main__":
    main("keel", KeelAdapter, _versions)
