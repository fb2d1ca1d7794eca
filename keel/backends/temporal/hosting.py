"""A process hosting an App in a Temporal worker until SIGTERM or Ctrl+C: what
`keel worker MODULE --backend URL` and `python -m keel.backends.temporal` run.

Example:
    await host(app, Backend.from_url("temporal://localhost:7233/default?task_queue=q"))
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel.app import App
    from keel.backends.temporal.config import Backend


def served(app: App) -> str:
    """The user's workflows `app` hosts, for the line a worker prints when it serves
    (every worker also hosts Keel's own, e.g. keel.memory.extract)."""
    names = ", ".join(sorted(n for n in app.registry.workflows if not n.startswith("keel.")))
    return names or "no workflows"


async def host(
    app: App,
    backend: Backend,
    *,
    cached: int = 1000,
    grace: float | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """Serve `app` on `backend` until SIGTERM or SIGINT. The first signal stops polling
    and gives the activities in flight `grace` seconds to finish (Temporal retries the
    rest on another worker); a second one stops at once. `say` gets the ready line."""
    from keel.backends.temporal.remote import use_client
    from keel.backends.temporal.worker import connect, serve

    app.backend = backend  # the App's own Temporal calls (child runs, decisions) go there
    client = await connect(backend, app=app)
    use_client(app, client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    signals = []

    def stopping(sig: int) -> None:
        signals.append(sig)
        if len(signals) == 1:
            stop.set()
        elif current is not None:  # again: do not wait for the activities in flight
            current.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping, sig)
    try:
        async with serve(app, client, backend, max_cached_workflows=cached, grace=grace):
            say(f"serving {served(app)} on {backend.url}")
            await stop.wait()
    except asyncio.CancelledError:
        if len(signals) < 2:
            raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


__all__ = ["host", "served"]
