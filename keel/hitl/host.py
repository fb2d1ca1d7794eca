"""What the human-in-the-loop layer needs from the application hosting it.

`keel.App` is one; the layer names it only through this protocol, so it depends on
nothing above it (the App wires the layer in, never the other way round).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from keel.engine.hooks import HookSet
    from keel.engine.registry import Registry
    from keel.store.base import Store


class Host(Protocol):
    """An application's store, registered code, hooks, reviewers and redactor."""

    store_url: str
    registry: Registry
    hooks: HookSet
    reviewers: dict[str, set[str]]  # queue -> who may decide it (unlisted: anyone)

    @property
    def store(self) -> Store: ...

    @property
    def redactor(self) -> Any: ...

    def _wake_worker(self) -> None:
        """Tell this process's embedded worker that a run may be ready (a decision)."""
