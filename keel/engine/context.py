"""`keel.Context`: the only door from a workflow to the outside world."""

from __future__ import annotations

import asyncio
import inspect
import random as _random
import time
import uuid as _uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from keel.engine.execution import CURRENT_SCOPE, Abandon, RunExecution, Suspend
from keel.engine.journal import Scope, live_degraded, superseded_attempts
from keel.engine.registry import Tool, ToolDef
from keel.engine.serde import args_digest, digest, unannotated
from keel.engine.waiting import wait_signal
from keel.errors import (
    ConfigError,
    KeelError,
    LeaseLost,
    MapFailed,
    NonDeterminismError,
    StoreError,
    structured,
)
from keel.policy.completion import All, CompletionPolicy
from keel.store.base import StepWrite
from keel.types import (
    ItemFailure,
    MapResult,
    StepKind,
    StepRecord,
    StepStatus,
    StructuredError,
)

if TYPE_CHECKING:
    from keel.engine.phase import Phase

T = TypeVar("T")
_FATAL = (NonDeterminismError, LeaseLost, StoreError)  # never one item's failure


class Context:
    """Passed to every workflow; each method is a journaled, replay-safe step.

    Example:
        @app.workflow(state=TriageState)
        async def triage(ctx: keel.Context, ticket: Ticket) -> str:
            account = await ctx.call(lookup_account, ticket.account_id)
            ctx.state.account = account
            return account.tier
    """

    __slots__ = ("_bound", "_exec")

    def __init__(self, execution: RunExecution, scope: Scope) -> None:
        self._exec = execution
        self._bound = scope

    @property
    def _scope(self) -> Scope:
        cur = CURRENT_SCOPE.get()
        if cur is not None and cur[0] is self._exec:
            return cur[1]
        return self._bound

    @property
    def run_id(self) -> str:
        """This run's id."""
        return self._exec.run.id

    @property
    def workflow(self) -> str:
        """The workflow's registered name."""
        return self._exec.run.workflow

    @property
    def input(self) -> dict[str, Any]:
        """The run's input as it was started (JSON), e.g. to show a reviewer what came in."""
        return self._exec.run.input

    @property
    def llm(self) -> Any:
        """Model calls (`text`, `structured`, `agent`); configure with `keel.App(llm=...)`."""
        make = self._exec.rt.extensions.get("llm")
        if make is None:
            raise ConfigError(
                "this app has no model configured: pass keel.App(llm=keel.llm.Gateway(...)) "
                "or a keel.llm.ScriptedModel, or set KEEL_MODEL"
            )
        return make(self)

    async def approval(
        self,
        action: str | dict[str, Any],
        *,
        context: Any = None,
        reason: str | None = None,
        queue: str = "approvals",
        timeout: float | None = None,
        on_timeout: Any = "reject",
    ) -> Any:
        """Suspend until a person approves `action` (see keel.hitl); the Decision.

        Raises `keel.ApprovalRejected` when they reject it.
        """
        ask = self._exec.rt.extensions.get("approval")
        if ask is None:
            raise ConfigError("this app has no approvals layer")
        return await ask(
            self,
            action,
            context=context,
            reason=reason,
            queue=queue,
            timeout=timeout,
            on_timeout=on_timeout,
        )

    @property
    def state(self) -> Any:
        """The run's typed state (this branch's isolated copy inside map/gather)."""
        tracker = self._scope.state
        if tracker is None:
            raise ConfigError(
                f"workflow {self.workflow!r} has no state; declare it with "
                "@app.workflow(state=MyStateModel)"
            )
        return tracker.value

    # -- steps --------------------------------------------------------------------

    async def call(self, tool: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a tool (or any function) as one journaled step and return its result."""
        tdef = self._tool(tool)
        if tdef.gated:
            gate = self._exec.rt.extensions.get("gate")
            if gate is None:
                raise ConfigError(
                    f"tool {tdef.name!r} needs approval, but this app has no approvals layer"
                )
            args, kwargs = await gate(self, tdef, args, kwargs)
        return await self._exec.step(
            self._scope,
            StepKind.TOOL,
            tdef.name,
            args_digest(args, kwargs),
            lambda: tdef.invoke(args, kwargs),
            tdef.return_type,
            policy=tdef.policy(args, kwargs),
        )

    def _tool(self, tool: Any) -> ToolDef:
        if isinstance(tool, Tool):
            return tool.definition
        if isinstance(tool, ToolDef):
            return tool
        if callable(tool):
            # __name__, not __qualname__: moving a function must not change its step keys
            name = getattr(tool, "__name__", None)
            if not name or "<lambda>" in name:
                raise ConfigError(
                    "ctx.call needs a named function or an @app.tool; a lambda has no stable "
                    "name to journal it under"
                )
            known = self._exec.rt.registry.tools.get(name)
            return known if known is not None else ToolDef(fn=tool, name=name)
        raise ConfigError(f"ctx.call expects a tool or function, got {type(tool).__name__}")

    async def sleep(self, seconds: float) -> None:
        """A durable timer: survives restarts; long sleeps suspend the run entirely."""
        ex = self._exec
        scope = self._scope
        key, pos = scope.next("sleep")
        dg = digest(float(seconds))
        rec = ex.check(scope, key, pos, dg)
        if rec is not None and rec.status is not StepStatus.PENDING:
            await ex.replayed(scope, rec, unannotated())
            return
        now = time.time()
        if rec is None:
            wake_at = now + max(0.0, float(seconds))
            pending = ex.record(
                scope,
                key,
                pos,
                StepKind.SLEEP,
                "sleep",
                dg,
                now,
                status=StepStatus.PENDING,
                wake_at=wake_at,
            )
            await ex.commit(scope, pending, None)
        else:
            assert rec.wake_at is not None
            wake_at = rec.wake_at
        remaining = wake_at - now
        if remaining > ex.rt.settings.inline_sleep_max:
            raise Suspend(wake_at=wake_at)
        if remaining > 0:
            await asyncio.sleep(remaining)
        started = rec.started_at if rec is not None else now
        done = ex.record(scope, key, pos, StepKind.SLEEP, "sleep", dg, started, wake_at=wake_at)
        await ex.commit(scope, done, None)

    async def wait_for(self, signal: str, timeout: float | None = None) -> Any:
        """Suspend until `keel signal RUN_ID <signal>` arrives; return its payload.

        Raises `keel.SignalTimeout` if `timeout` seconds pass first (a durable deadline).
        """
        scope = self._scope
        key, pos = scope.next(f"signal:{signal}")
        return await wait_signal(self._exec, scope, key, pos, signal, timeout)

    def phase(
        self,
        name: str,
        check: Any = None,
        retries: int = 0,
        on_fail: str = "fail",
        queue: str = "escalations",
    ) -> Phase:
        """A block of steps validated as a whole when it ends; see `keel.engine.phase`.

        `check` takes the state and returns messages (or None); a failed check fails only
        this phase. `retries` re-runs it in a fresh journal branch (use `async for`);
        then `on_fail="escalate"` asks a person, `"fail"` raises `keel.CheckpointFailed`.
        """
        from keel.engine.phase import Phase

        return Phase(self, name, check, retries, on_fail, queue)  # type: ignore[arg-type]

    @property
    def degraded(self) -> list[str]:
        """Keys of steps so far that fell back to a default (data the run is missing)."""
        records = self._exec.journal.by_key.values()
        degraded = [r.key for r in records if r.fallback == "degrade"]
        if not degraded:
            return []
        attempts = [r.key for r in records if r.kind is StepKind.PHASE]
        return live_degraded(degraded, superseded_attempts(attempts, [r.key for r in records]))

    def now(self) -> datetime:
        """The current time, recorded once so replay sees the same instant."""
        ts = self._exec.value(self._scope, "now", time.time)
        return datetime.fromtimestamp(ts, UTC)

    def uuid(self) -> str:
        """A random UUID4 string, recorded so replay sees the same one."""
        out: str = self._exec.value(self._scope, "uuid", lambda: str(_uuid.uuid4()))
        return out

    def random(self) -> float:
        """A float in [0, 1), recorded so replay sees the same one."""
        out: float = self._exec.value(self._scope, "random", _random.random)
        return out

    # -- scatter-gather -------------------------------------------------------------

    async def map(
        self,
        fn: Any,
        items: Iterable[Any],
        concurrency: int | None = None,
        require: CompletionPolicy | None = None,
        name: str | None = None,
    ) -> MapResult[Any]:
        """Run `fn` on every item in an isolated child scope, at most `concurrency` at once.

        `fn` is a tool (called with the item) or `async def fn(ctx, item)`. Returns a
        `MapResult` in input order; raises `MapFailed` if `require` is not met.
        """
        items = list(items)
        policy = require if require is not None else All()
        if concurrency is not None and concurrency < 1:
            raise ConfigError(f"ctx.map concurrency must be >= 1, got {concurrency}")
        ex = self._exec
        scope = self._scope
        tool: ToolDef | None = None
        label: str
        if isinstance(fn, Tool | ToolDef):
            tool = self._tool(fn)
            label = tool.name
            if tool.gated:
                raise ConfigError(
                    f"tool {tool.name!r} needs approval per call; map an `async def fn(ctx, "
                    "item)` that calls it, so each item gets its own approval step"
                )
        elif inspect.iscoroutinefunction(fn):
            label = str(getattr(fn, "__name__", "fn"))
        else:
            raise ConfigError(
                "ctx.map takes an @app.tool or an `async def fn(ctx, item)`, "
                f"got {type(fn).__name__}"
            )
        label = name or label
        key, pos = scope.next(f"map:{label}")
        dg = digest(label, len(items))
        shape = {"items": len(items)}
        rec, started = self._open_fan_out(key, pos, StepKind.MAP, label, dg, shape)
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
            child_key = f"{key}/{i}"
            child_state = scope.state.fork() if scope.state is not None else None
            child_scope = Scope(path=f"{child_key}/", state=child_state)
            child_ctx = Context(ex, child_scope)

            async def body() -> Any:
                token = CURRENT_SCOPE.set((ex, child_scope))
                try:
                    return await fn(child_ctx, item)
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

        result = await self._fan_out(
            key, [(i, it) for i, it in enumerate(items)], run_item, concurrency
        )
        if rec is None or rec.status is StepStatus.PENDING:
            summary = ex.record(scope, key, pos, StepKind.MAP, label, dg, started)
            summary.input = shape
            await ex.commit(scope, summary, _summary_json(result))
        elif scope.state is not None:
            scope.state.sync()  # where the first execution committed the map
        self._enforce(policy, key, result)
        return result

    async def gather(
        self, *awaitables: Awaitable[Any], require: CompletionPolicy | None = None
    ) -> MapResult[Any]:
        """Await heterogeneous steps concurrently, each in its own journal branch.

        Example: `account, history = await ctx.gather(ctx.call(a, 1), ctx.call(b, 1))`
        """
        policy = require if require is not None else All()
        ex = self._exec
        scope = self._scope
        key, pos = scope.next("gather")
        dg = digest("gather", len(awaitables))
        shape = {"branches": len(awaitables)}
        try:
            rec, started = self._open_fan_out(key, pos, StepKind.GATHER, "gather", dg, shape)
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

        result = await self._fan_out(key, list(enumerate(awaitables)), run_branch, None)
        if rec is None or rec.status is StepStatus.PENDING:
            summary = ex.record(scope, key, pos, StepKind.GATHER, "gather", dg, started)
            summary.input = shape
            await ex.commit(scope, summary, _summary_json(result))
        elif scope.state is not None:
            scope.state.sync()  # where the first execution committed the gather
        self._enforce(policy, key, result)
        return result

    def _open_fan_out(
        self, key: str, pos: int, kind: StepKind, label: str, dg: str, shape: dict[str, int]
    ) -> tuple[StepRecord | None, float]:
        """Check a map or gather against the journal and mark it started.

        The started mark (a pending entry holding the item count) goes out with the
        first item's write, so a resumed run whose item list changed fails here, at
        the map, and not after items ran.
        """
        ex = self._exec
        scope = self._scope
        rec = ex.check(scope, key, pos, dg, shape)
        if rec is not None:
            return rec, rec.started_at
        started = time.time()
        pending = ex.record(scope, key, pos, kind, label, dg, started, status=StepStatus.PENDING)
        pending.input = shape
        ex.buffer.append(StepWrite(pending))
        ex.journal.add(pending)
        return None, started

    async def _fan_out(
        self,
        key: str,
        items: list[tuple[int, Any]],
        run_item: Callable[[int, Any], Awaitable[Any]],
        concurrency: int | None,
    ) -> MapResult[Any]:
        ex = self._exec
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

    def _enforce(self, policy: CompletionPolicy, key: str, result: MapResult[Any]) -> None:
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


__all__ = ["Context"]
