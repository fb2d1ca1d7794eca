"""Scatter-gather behind `ctx.map` and `ctx.gather`: isolated child branches of the journal.

Each item (or awaitable) runs in its own journal branch with its own copy of the
state; results are per item, and the completion policy decides whether the whole
fan-out failed. A started mark goes out with the first item's write, so a resumed
run whose item list changed fails at the fan-out, not after items ran.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from keel.engine.execution import CURRENT_SCOPE, Abandon, RunExecution, Suspend
from keel.engine.journal import Scope
from keel.engine.registry import ToolDef
from keel.engine.serde import digest, unannotated
from keel.errors import (
    KeelError,
    LeaseLost,
    MapFailed,
    NonDeterminismError,
    StoreError,
    structured,
)
from keel.policy.completion import CompletionPolicy
from keel.store.records import StepWrite
from keel.types import ItemFailure, MapResult, StepKind, StepRecord, StepStatus, StructuredError

if TYPE_CHECKING:
    from keel.engine.context import Context

_FATAL = (NonDeterminismError, LeaseLost, StoreError)  # never one item's failure


async def map_items(
    ex: RunExecution,
    scope: Scope,
    fn: Callable[[Context, Any], Awaitable[Any]] | None,
    tool: ToolDef | None,
    label: str,
    items: list[Any],
    concurrency: int | None,
    policy: CompletionPolicy,
) -> MapResult[Any]:
    """Run `tool(item)` or `fn(child_ctx, item)` for every item; see `Context.map`."""
    from keel.engine.context import Context

    key, pos = scope.next(f"map:{label}")
    dg = digest(label, len(items))
    shape = {"items": len(items)}
    rec, started = _open(ex, scope, key, pos, StepKind.MAP, label, dg, shape)
    map_scope = scope.child(key, None)

    async def run_item(i: int, item: Any) -> Any:
        if tool is not None:
            t = tool
            return await ex.step(
                map_scope,
                StepKind.TOOL,
                t.name,
                digest(item),
                lambda: t.invoke((item,), {}),
                t.return_type,
                key=f"{key}/{i}",
                pos=i,
                policy=t.policy((item,), {}),
            )
        assert fn is not None
        body_fn = fn
        child_key = f"{key}/{i}"
        child_state = scope.state.fork() if scope.state is not None else None
        child_scope = Scope(path=f"{child_key}/", state=child_state)
        child_ctx = Context(ex, child_scope)

        async def body() -> Any:
            token = CURRENT_SCOPE.set((ex, child_scope))
            try:
                return await body_fn(child_ctx, item)
            finally:
                CURRENT_SCOPE.reset(token)

        return await ex.step(
            map_scope,
            StepKind.CHILD,
            label,
            digest(item),
            body,
            unannotated(),
            key=child_key,
            pos=i,
            shown_input=item,
        )

    result = await _fan_out(ex, key, list(enumerate(items)), run_item, concurrency)
    await _close(ex, scope, key, pos, StepKind.MAP, label, dg, shape, rec, started, result)
    enforce(policy, key, result)
    return result


async def gather(
    ex: RunExecution, scope: Scope, awaitables: tuple[Awaitable[Any], ...], policy: CompletionPolicy
) -> MapResult[Any]:
    """Await heterogeneous steps concurrently, each in its own branch; see `Context.gather`."""
    key, pos = scope.next("gather")
    dg = digest("gather", len(awaitables))
    shape = {"branches": len(awaitables)}
    try:
        rec, started = _open(ex, scope, key, pos, StepKind.GATHER, "gather", dg, shape)
    except NonDeterminismError:
        _close_all(awaitables)
        raise
    branch_scope = scope.child(key, None)

    async def run_branch(i: int, aw: Awaitable[Any]) -> Any:
        child_key = f"{key}/{i}"
        child_state = scope.state.fork() if scope.state is not None else None
        child_scope = Scope(path=f"{child_key}/", state=child_state)
        done = ex.journal.by_key.get(child_key)
        if done is not None and done.status is not StepStatus.PENDING:
            _close_all([aw])

        async def body() -> Any:
            token = CURRENT_SCOPE.set((ex, child_scope))
            try:
                return await aw
            finally:
                CURRENT_SCOPE.reset(token)

        return await ex.step(
            branch_scope,
            StepKind.CHILD,
            "branch",
            digest(i),
            body,
            unannotated(),
            key=child_key,
            pos=i,
        )

    result = await _fan_out(ex, key, list(enumerate(awaitables)), run_branch, None)
    await _close(ex, scope, key, pos, StepKind.GATHER, "gather", dg, shape, rec, started, result)
    enforce(policy, key, result)
    return result


def _open(
    ex: RunExecution,
    scope: Scope,
    key: str,
    pos: int,
    kind: StepKind,
    label: str,
    dg: str,
    shape: dict[str, int],
) -> tuple[StepRecord | None, float]:
    """Check a map or gather against the journal and mark it started.

    The started mark (a pending entry holding the item count) goes out with the
    first item's write, so a resumed run whose item list changed fails here, at
    the map, and not after items ran.
    """
    rec = ex.check(scope, key, pos, dg, shape)
    if rec is not None:
        return rec, rec.started_at
    started = time.time()
    pending = ex.record(scope, key, pos, kind, label, dg, started, status=StepStatus.PENDING)
    pending.input = shape
    ex.buffer.append(StepWrite(pending))
    ex.journal.add(pending)
    return None, started


async def _close(
    ex: RunExecution,
    scope: Scope,
    key: str,
    pos: int,
    kind: StepKind,
    label: str,
    dg: str,
    shape: dict[str, int],
    rec: StepRecord | None,
    started: float,
    result: MapResult[Any],
) -> None:
    """Journal the fan-out's summary once (replay: re-sync the state where it was)."""
    if rec is None or rec.status is StepStatus.PENDING:
        summary = ex.record(scope, key, pos, kind, label, dg, started)
        summary.input = shape
        await ex.commit(scope, summary, _summary_json(result))
    elif scope.state is not None:
        scope.state.sync()  # where the first execution committed the fan-out


async def _fan_out(
    ex: RunExecution,
    key: str,
    items: list[tuple[int, Any]],
    run_item: Callable[[int, Any], Awaitable[Any]],
    concurrency: int | None,
) -> MapResult[Any]:
    n = len(items)
    values: list[Any] = [None] * n
    failed: dict[int, StructuredError] = {}
    suspended: list[Suspend] = []
    fatal: list[BaseException] = []
    queue = iter(items)
    hooks = ex.rt.hooks
    done = 0

    async def lane() -> None:
        nonlocal done
        for i, item in queue:
            if fatal:
                return
            try:
                values[i] = await run_item(i, item)
            except Suspend as s:
                suspended.append(s)
                continue
            except (Abandon, *_FATAL) as exc:
                fatal.append(exc)
                return
            except KeelError as exc:
                failed[i] = structured(exc)
            done += 1
            if hooks.active:
                hooks.map_progress(ex.run.id, key, done, n)

    width = min(concurrency or n, n)
    if width <= 1:
        await lane()
    else:
        lanes = [asyncio.ensure_future(lane()) for _ in range(width)]
        try:
            await asyncio.gather(*lanes)
        except BaseException:
            for t in lanes:
                t.cancel()
            raise
    if fatal:
        raise fatal[0]
    if suspended:
        merged = suspended[0]
        for s in suspended[1:]:
            merged = merged.merge(s)
        raise merged
    return MapResult[Any](
        values=values,
        failed=[ItemFailure(index=i, error=e) for i, e in sorted(failed.items())],
    )


def enforce(policy: CompletionPolicy, key: str, result: MapResult[Any]) -> None:
    """Raise `MapFailed` (with `.result`) when `result` does not meet `policy`."""
    total = len(result.values)
    need = policy.required(total)
    if result.succeeded >= need:
        return
    first = result.failed[0].error if result.failed else None
    exc = MapFailed(
        f"{key}: {len(result.failed)} of {total} items failed; required "
        f"{policy.describe(total)}"
        + (
            f" (first failure: item {result.failed[0].index}: {first.type}: {first.message})"
            if first
            else ""
        ),
        step=key,
        failed=[f.index for f in result.failed],
        required=need,
        total=total,
    )
    exc.result = result  # type: ignore[attr-defined]
    raise exc


def _summary_json(result: MapResult[Any]) -> bytes:
    import pydantic_core

    return pydantic_core.to_json(
        {"total": len(result.values), "failed": [f.index for f in result.failed]}
    )


def _close_all(aws: Iterable[Awaitable[Any]]) -> None:
    for aw in aws:
        close = getattr(aw, "close", None)
        if close is not None and inspect.iscoroutine(aw):
            close()
