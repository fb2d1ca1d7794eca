"""The Temporal client an App uses for the runs it hands to Temporal (`App(backend=)`).

One per App and event loop, connected on first use for the App (its codec and claim check), so every
caller (starting runs, sending signals and decisions, reading a run's status) shares it.

Example:
    client = await client_for(app)
    await client.get_workflow_handle(run_id).signal("go", None)
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError

if TYPE_CHECKING:
    from temporalio.client import Client

    from keel.app import App
    from keel.backends.temporal.config import Backend

_CLIENTS: weakref.WeakKeyDictionary[Any, tuple[asyncio.AbstractEventLoop, Client]] = (
    weakref.WeakKeyDictionary()
)


def backend_of(app: App) -> Backend:
    """`app`'s Temporal backend, or a clear error when its runs execute on Keel's engine."""
    if app.backend is None:
        raise ConfigError(
            "this App runs on Keel's own engine: pass keel.App(backend=...) or set "
            "KEEL_BACKEND=temporal://host:7233/namespace?task_queue=q to use Temporal"
        )
    backend: Backend = app.backend
    return backend


async def client_for(app: App) -> Client:
    """The App's Temporal client on this event loop (connected once, with its codec)."""
    from keel.backends.temporal.worker import connect

    loop = asyncio.get_running_loop()
    held = _CLIENTS.get(app)
    if held is not None and held[0] is loop:
        return held[1]
    client = await connect(backend_of(app), app=app)
    _CLIENTS[app] = (loop, client)
    return client


def use_client(app: App, client: Client) -> None:
    """Make `client` the App's client on this loop (a worker shares its own)."""
    _CLIENTS[app] = (asyncio.get_running_loop(), client)


__all__ = ["backend_of", "client_for", "use_client"]
