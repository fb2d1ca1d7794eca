"""Keel workflows on Temporal: the same `async def wf(ctx, ...)`, run by a Temporal worker.

In progress (issue 15; docs/temporal.md says what works today). `import keel` never
imports temporalio: only the worker and the generic workflow do, when used. Most code
needs none of this package's functions: `keel.App(backend=Backend(...))` (or
`KEEL_BACKEND`) sends `app.start/signal/cancel` and the CLI there, and `keel worker
MODULE --backend URL` hosts the App; these are the lower-level pieces.

Example:
    from keel.backends.temporal import Backend, connect, serve, start, result
    backend = Backend.from_url("temporal://localhost:7233/default?task_queue=keel")
    client = await connect(backend, app=app)
    async with serve(app, client, backend):
        run_id = await start(app, client, backend, "greet", {"name": "ada"})
        print(await result(app, client, run_id))
"""

from __future__ import annotations

from keel.backends.temporal.config import Backend, from_env
from keel.backends.temporal.worker import (
    cancel,
    connect,
    replayer,
    result,
    serve,
    signal,
    start,
)

__all__ = [
    "Backend",
    "cancel",
    "connect",
    "from_env",
    "replayer",
    "result",
    "serve",
    "signal",
    "start",
]
