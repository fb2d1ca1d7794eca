"""The typed doors through which an App plugs features into the engine.

The engine knows nothing of models or people; it declares what it calls (these
protocols) and the App fills them (`keel/features.py`): `keel.llm` implements
`ModelCalls`, `keel.hitl` implements `People`. A door left empty gives the user
a clear `ConfigError` that says how to fill it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pydantic import BaseModel

    from keel.engine.context import Context
    from keel.engine.registry import ToolDef


class ModelCalls(Protocol):
    """Makes what `ctx.llm` returns for one context (keel.llm's `LLM` facade).

    Example:
        features = Features(models=lambda ctx: LLM(ctx, gateway))
    """

    def __call__(self, ctx: Context) -> Any: ...


class SessionAccess(Protocol):
    """Makes what `ctx.session` returns for one context (keel.memory's `SessionState`).

    Example:
        features = Features(session=lambda ctx: SessionState(ctx, backend))
    """

    def __call__(self, ctx: Context) -> Any: ...


class People(Protocol):
    """Requests to people a workflow makes: approvals, gated tools, output reviews.

    Example (keel.hitl implements it):
        features = Features(people=keel.hitl.gate.Checkpoints(app))
    """

    async def approval(
        self,
        ctx: Context,
        action: str | dict[str, Any],
        *,
        context: Any,
        reason: str | None,
        queue: str,
        timeout: float | None,
        on_timeout: Any,
    ) -> Any:
        """Suspend until a person approves `action` (`ctx.approval`); their Decision."""
        ...

    async def approve_call(
        self, ctx: Context, tool: ToolDef, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The gate in front of a tool that needs approval: the arguments to call it with."""
        ...

    async def review_output(
        self,
        ctx: Context,
        *,
        schema: type[BaseModel],
        output: dict[str, Any],
        score: float,
        threshold: float,
        prompt: Any,
        queue: str,
        timeout: float | None,
    ) -> BaseModel:
        """A low-confidence model output confirmed or corrected by a person."""
        ...


class MemoryCalls(Protocol):
    """Makes what `ctx.memory` returns for one context (keel.memory's journaled facade).

    Example:
        features = Features(memory=lambda ctx: JournaledMemory(ctx, app.memory))
    """

    def __call__(self, ctx: Context) -> Any: ...


@dataclass
class Features:
    """The features an App attached to its runtime (None: not configured).

    Example:
        rt.features = Features(models=make_llm, people=Checkpoints(app))
    """

    models: ModelCalls | None = None
    people: People | None = None
    memory: MemoryCalls | None = None
    session: SessionAccess | None = None


__all__ = ["Features", "MemoryCalls", "ModelCalls", "People", "SessionAccess"]


class Background(Protocol):
    """A feature's background work (sampling, notifications) that the App finishes on
    close, after its worker stops and before the store closes.

    Example:
        await sampler.drain()  # keel.hitl.sampling.Sampler is one; App.close() awaits it
    """

    async def drain(self) -> None:
        """Finish what is queued; return when nothing of it is left."""
        ...
