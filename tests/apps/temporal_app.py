"""An App served by a Temporal worker in a subprocess (tests/test_temporal_crash.py).

    python -m tests.apps.temporal_app ADDRESS TASK_QUEUE

Each tool run appends `<idempotency key> <pid>` to `$KEEL_TEST_DIR/exec.log` (one
O_APPEND write), so a test can count executions across processes and a SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import keel

app = keel.App()  # its store is never opened: a Temporal run does not use it yet


def _log(what: str) -> str:
    step = keel.current_step()
    assert step is not None
    fd = os.open(
        Path(os.environ["KEEL_TEST_DIR"]) / "exec.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT
    )
    try:
        os.write(fd, f"{step.idempotency_key} {what} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return f"{what} by {os.getpid()}"


@app.tool
async def record(what: str) -> str:
    return _log(what)


@app.workflow
async def pipeline(ctx: keel.Context, name: str) -> list[str]:
    first = await ctx.call(record, f"{name}-first")
    await ctx.wait_for("go", timeout=3600)
    second = await ctx.call(record, f"{name}-second")
    return [first, second]


async def _serve(address: str, queue: str) -> None:
    from keel.backends.temporal import Backend, connect, serve

    backend = Backend(address=address, task_queue=queue)
    client = await connect(backend)
    async with serve(app, client, backend, max_cached_workflows=0):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], sys.argv[2]))
