"""An App served by a Temporal worker in a subprocess (tests/test_temporal_crash.py).

    python -m keel.backends.temporal tests.apps.temporal_app --backend temporal://...

Each tool run appends `<idempotency key> <pid>` to `$KEEL_TEST_DIR/exec.log` (one
O_APPEND write), so a test can count executions across processes and a SIGKILL.
"""

from __future__ import annotations

import os
from pathlib import Path

import keel


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


async def record(what: str) -> str:
    return _log(what)


async def pipeline(ctx: keel.Context, name: str) -> list[str]:
    first = await ctx.call(record, f"{name}-first")
    await ctx.wait_for("go", timeout=3600)
    second = await ctx.call(record, f"{name}-second")
    return [first, second]


def build(store: str | None = None) -> keel.App:
    """The App on `store` (None: KEEL_STORE, which the test sets for the worker too)."""
    app = keel.App(store)
    app.tool(record)
    app.workflow(pipeline)
    return app


app = build()
