"""The execution seam: everything `keel.Context` asks of whatever executes its run.

`Context` is the workflow's API; an `ExecutionPort` is the executor behind it.
Keel's embedded engine (`RunExecution`) implements it; a second executor (a
Temporal worker, say) implements the same members and reuses `Context`, `keel.llm`
and `keel.hitl` unchanged — the shape of temporalio's `workflow._Runtime` and
pydantic-ai's durable-execution backends. Keep it narrow: a new Context method is
built on these members, not added here, unless no member can express it.

A `Scope` is the journal branch a Context writes in (the root, a map item, a
gather branch, a phase attempt); the port hands them out and the Context passes
them back, never looking inside beyond `state`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from keel.engine.context import Context
    from keel.engine.journal import Scope
    from keel.engine.operation import Operation
    from keel.engine.phase import Phase
    from keel.engine.plugins import Features
    from keel.engine.recovery import StepPolicy
    from keel.engine.registry import ToolDef
    from keel.policy.completion import CompletionPolicy
    from keel.types import MapResult, RunInfo, StepKind


class ExecutionPort(Protocol):
    """What executes a run, as `Context` sees it.

    Example (what `ctx.uuid()` does):
        value = port.value(scope, "uuid", lambda: str(uuid.uuid4()))
    """

    @property
    def run(self) -> RunInfo:
        """The run being executed: id, workflow, input, tenant."""
        ...

    @property
    def features(self) -> Features:
        """The features the App attached (model calls, people)."""
        ...

    @property
    def tools(self) -> Mapping[str, ToolDef]:
        """Registered tools by name (a plain function passed to `ctx.call` is looked up)."""
        ...

    def operation(
        self,
        scope: Scope,
        kind: StepKind,
        name: str,
        digest: str,
        *,
        key_name: str | None = None,
        shown_input: Any = ...,  # NOT_SHOWN: nothing to show beside the recorded input
    ) -> Operation:
        """Open the durable operation at the next key of `scope`, checked against the
        journal (see `keel.engine.operation`)."""
        ...

    async def step(
        self,
        scope: Scope,
        kind: StepKind,
        name: str,
        digest: str,
        fn: Callable[[], Awaitable[Any]],
        annotation: Any,
        *,
        policy: StepPolicy | None = None,
    ) -> Any:
        """`operation(...)` then `run(fn, annotation, policy)`: the hot path of `ctx.call`."""
        ...

    def value(self, scope: Scope, name: str, make: Callable[[], Any]) -> Any:
        """A non-deterministic value (`make()`) recorded once; replay returns the same."""
        ...

    async def sleep(self, scope: Scope, seconds: float) -> None:
        """A durable timer; a long one suspends the run."""
        ...

    async def wait_signal(self, scope: Scope, signal: str, timeout: float | None) -> Any:
        """Wait durably for an outside signal; its payload (or `keel.SignalTimeout`)."""
        ...

    async def map(
        self,
        scope: Scope,
        fn: Callable[[Context, Any], Awaitable[Any]] | None,
        tool: ToolDef | None,
        label: str,
        items: list[Any],
        concurrency: int | None,
        require: CompletionPolicy,
    ) -> MapResult[Any]:
        """Run a tool or `fn(child_ctx, item)` per item, each in an isolated child scope."""
        ...

    async def gather(
        self, scope: Scope, awaitables: tuple[Awaitable[Any], ...], require: CompletionPolicy
    ) -> MapResult[Any]:
        """Await steps concurrently, each in its own child scope."""
        ...

    def phase(
        self, ctx: Context, name: str, check: Any, retries: int, on_fail: str, queue: str
    ) -> Phase:
        """A block of steps checked as a whole at its end (`ctx.phase`)."""
        ...

    def current(self, bound: Scope) -> Scope:
        """The scope a Context bound to `bound` writes in now (inside a map item, a
        gather branch or a phase attempt it is that child scope)."""
        ...

    def degraded(self) -> list[str]:
        """Keys of steps so far that fell back to a default (data the run is missing)."""
        ...


__all__ = ["ExecutionPort"]
