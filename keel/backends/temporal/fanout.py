"""`ctx.map` and `ctx.gather` on Temporal: the same keys, branches and results as Keel's.

Every item runs in its own child scope (`<map key>/<i>`), with its own copy of the
state; a tool item is one activity, a `fn(ctx, item)` item runs its steps inline. The
workflow's deterministic event loop decides the order, so replay sees the same one.
Results are per item, and the completion policy (`All`, `AtLeast`, `BestEffort`) is
applied by the engine's own `enforce`, raising the same `MapFailed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from keel.backends.temporal.ended import run_cancelled
from keel.engine.context import Context
from keel.engine.fanout import enforce
from keel.engine.journal import Scope
from keel.engine.serde import digest
from keel.errors import KeelError, NonDeterminismError, from_structured, structured
from keel.types import ItemFailure, MapResult, StructuredError

if TYPE_CHECKING:
    from keel.backends.temporal.port import TemporalExecution
    from keel.engine.registry import ToolDef
    from keel.policy.completion import CompletionPolicy

# The branch a Context writes in now (inside a map item or gather branch), per task.
BRANCH: ContextVar[tuple[object, Scope] | None] = ContextVar("keel_temporal_branch", default=None)


async def map_items(
    port: TemporalExecution,
    scope: Scope,
    fn: Callable[[Context, Any], Awaitable[Any]] | None,
    tool: ToolDef | None,
    label: str,
    items: list[Any],
    concurrency: int | None,
    require: CompletionPolicy,
) -> MapResult[Any]:
    """`ctx.map` (see `keel.engine.fanout.map_items`, whose keys it keeps)."""
    key, _ = scope.next(f"map:{label}")
    map_scope = scope.child(key, None)

    async def run_item(i: int, item: Any) -> Any:
        if tool is not None:
            return await port.call_tool(
                map_scope,
                tool,
                digest(item),
                tool.named_args((item,), {}),
                tool.return_type,
                key=f"{key}/{i}",
                pos=i,
            )
        assert fn is not None
        child = _child(scope, f"{key}/{i}")
        return await _in_branch(port, child, fn(Context(port, child), item), label)

    result = await _fan_out(list(enumerate(items)), run_item, concurrency)
    enforce(require, key, result)
    return result


async def gather(
    port: TemporalExecution,
    scope: Scope,
    awaitables: tuple[Awaitable[Any], ...],
    require: CompletionPolicy,
) -> MapResult[Any]:
    """`ctx.gather`: each awaitable in its own branch (`<gather key>/<i>`)."""
    key, _ = scope.next("gather")

    async def run_branch(i: int, aw: Awaitable[Any]) -> Any:
        return await _in_branch(port, _child(scope, f"{key}/{i}"), aw, "branch")

    result = await _fan_out(list(enumerate(awaitables)), run_branch, None)
    enforce(require, key, result)
    return result


def _child(scope: Scope, key: str) -> Scope:
    state = scope.state.fork() if scope.state is not None else None
    return Scope(path=f"{key}/", state=state, phase=scope.phase, phase_prefix=scope.phase_prefix)


async def _in_branch(port: object, child: Scope, aw: Awaitable[Any], label: str) -> Any:
    """Await a branch's body in its scope; a failure is the branch's step error, as the
    engine journals it (key `<fan-out key>/<i>`, one attempt, `tool` = the label)."""
    token = BRANCH.set((port, child))
    try:
        return await aw
    except NonDeterminismError:
        raise
    except Exception as exc:
        if run_cancelled(exc):
            raise  # the run's cancellation: it ends the run, not this one branch
        err = structured(exc, step=child.path.rstrip("/"), attempts=1)
        err.data.setdefault("tool", label)
        raise from_structured(err) from exc
    finally:
        BRANCH.reset(token)


async def _fan_out(
    items: list[tuple[int, Any]],
    run_item: Callable[[int, Any], Awaitable[Any]],
    concurrency: int | None,
) -> MapResult[Any]:
    n = len(items)
    values: list[Any] = [None] * n
    failed: dict[int, StructuredError] = {}
    fatal: list[BaseException] = []
    queue = iter(items)

    async def lane() -> None:
        for i, item in queue:
            if fatal:
                return
            try:
                values[i] = await run_item(i, item)
            except NonDeterminismError as exc:  # never one item's failure
                fatal.append(exc)
                return
            except KeelError as exc:
                failed[i] = structured(exc)

    width = min(concurrency or n, n)
    if width <= 1:
        await lane()
    else:
        await asyncio.gather(*(lane() for _ in range(width)))
    if fatal:
        raise fatal[0]
    return MapResult[Any](
        values=values,
        failed=[ItemFailure(index=i, error=e) for i, e in sorted(failed.items())],
    )


__all__ = ["BRANCH", "gather", "map_items"]
