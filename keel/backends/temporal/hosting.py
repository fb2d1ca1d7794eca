"""Which App a Temporal worker in this process hosts, by task queue.

The generic workflow finds the Keel workflow to run through it (no temporalio here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.app import App

_HOSTED: dict[str, App] = {}


def host(task_queue: str, app: App) -> None:
    """Make `app`'s workflows the ones this process runs for `task_queue`."""
    other = _HOSTED.get(task_queue)
    if other is not None and other is not app:
        raise ConfigError(
            f"task queue {task_queue!r} is already hosted by another App in this process; "
            "give each App its own task_queue"
        )
    _HOSTED[task_queue] = app


def unhost(task_queue: str) -> None:
    """Stop hosting `task_queue` (its worker stopped)."""
    _HOSTED.pop(task_queue, None)


def hosted(task_queue: str) -> App:
    """The App hosted for `task_queue`; a clear error if none is."""
    app = _HOSTED.get(task_queue)
    if app is None:
        raise ConfigError(
            f"no Keel App is hosted for task queue {task_queue!r} in this worker process"
        )
    return app


__all__ = ["host", "hosted", "unhost"]
