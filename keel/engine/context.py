"""`keel.Context`: the only door from a workflow to the outside world.

A Context talks to execution only through `keel.engine.port.ExecutionPort`, so any
executor that implements that protocol runs the same workflows.
"""

from __future__ import annotations

import inspect
import random as _random
import time
import uuid as _uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from keel.engine.journal import Scope
from keel.engine.keep import kept
from keel.engine.operation import NOT_SHOWN
from keel.engine.registry import Tool, ToolDef
from keel.engine.serde import args_digest, digest
from keel.errors import ConfigError
from keel.policy.completion import All, CompletionPolicy
from keel.types import MapResult, StepKind

if TYPE_CHECKING:
    from keel.engine.operation import Operation
    from keel.engine.phase import Phase
    from keel.engine.port import ExecutionPort

T = TypeVar("T")
_NO_MODEL = (
    "this app has no model configured: pass keel.App(llm=keel.llm.Gateway(...)) "
    "or a keel.llm.ScriptedModel, or set KEEL_MODEL"
)


class Context:
    """Passed to every workflow; each method is a journaled, replay-safe step.

    Example:
        @app.workflow(state=TriageState)
        async def triage(ctx: keel.Context, ticket: Ticket) -> str:
            account = await ctx.call(lookup_account, ticket.account_id)
            ctx.state.account = account
            return account.tier
    """

    __slots__ = ("_bound", "_port")

    def __init__(self, port: ExecutionPort, scope: Scope) -> None:
        self._port = port
        self._bound = scope

    @property
    def _scope(self) -> Scope:
        return self._port.current(self._bound)

    def current_scope(self) -> Scope:
        """The journal branch this context writes in now (for the execution port)."""
        return self._port.current(self._bound)

    @property
    def run_id(self) -> str:
        """This run's id."""
        return self._port.run.id

    @property
    def workflow(self) -> str:
        """The workflow's registered name."""
        return self._port.run.workflow

    @property
    def tenant(self) -> str | None:
        """The tenant the run was started for (per-tenant budgets), or None."""
        return self._port.run.tenant

    @property
    def session_id(self) -> str:
        """The session this run belongs to (`App.start(session=...)`; else its run id)."""
        return self._port.run.session or self._port.run.id

    @property
    def session(self) -> Any:
        """This run's session state (`get`, `set`, `delete`, `compare_and_set`), shared by
        every run started with the same `session=`; see keel.memory.session."""
        make = self._port.features.session
        if make is None:
            raise ConfigError("this app has no session state layer (keel.memory)")
        return make(self)

    @property
    def input(self) -> dict[str, Any]:
        """The run's input as it was started (JSON), e.g. to show a reviewer what came in."""
        return self._port.run.input

    @property
    def llm(self) -> Any:
        """Model calls (`text`, `structured`, `agent`); configure with `keel.App(llm=...)`."""
        make = self._port.features.models
        if make is None:
            raise ConfigError(_NO_MODEL)
        return make(self)

    @property
    def memory(self) -> Any:
        """Long-term memory, journaled: `search` returns on replay exactly the hits the
        first attempt saw, and `add`/`supersede`/`forget` happen once (docs/memory.md)."""
        make = self._port.features.memory
        if make is None:
            raise ConfigError("this app has no long-term memory attached (keel.App attaches it)")
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
        people = self._port.features.people
        if people is None:
            raise ConfigError("this app has no approvals layer")
        return await people.approval(
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

    # -- the durable-operation primitive ------------------------------------------------

    def operation(
        self,
        name: str,
        *inputs: Any,
        kind: StepKind = StepKind.TOOL,
        key_name: str | None = None,
        shown: Any = NOT_SHOWN,
    ) -> Operation:
        """Open a journaled operation here: the one way a feature makes a durable step.

        Its key is this branch's path + `key_name` (default `name`) + a sequence
        number; `inputs` are digested so that replay with other inputs raises
        `keel.NonDeterminismError` (with `shown` beside the recorded input, when
        given). See `keel.engine.operation.Operation` and
        docs/durable-operations.md.

        Example:
            op = ctx.operation("oracle", question)
            answer = await op.run(lambda: oracle.ask(question))
        """
        return self._port.operation(
            self._scope, kind, name, digest(*inputs), key_name=key_name, shown_input=shown
        )

    # -- steps --------------------------------------------------------------------

    async def call(self, tool: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a tool (or any function) as one journaled step and return its result."""
        tdef = self._tool(tool)
        if tdef.gated:
            people = self._port.features.people
            if people is None:
                raise ConfigError(
                    f"tool {tdef.name!r} needs approval, but this app has no approvals layer"
                )
            args, kwargs = await people.approve_call(self, tdef, args, kwargs)
        effect: Callable[[], Awaitable[Any]] = lambda: tdef.invoke(args, kwargs)  # noqa: E731
        if tdef.keep is not None:  # output cut to keep=, the full one journaled aside
            effect = kept(self._port, self._scope, tdef, effect)
        return await self._port.step(
            self._scope,
            StepKind.TOOL,
            tdef.name,
            args_digest(args, kwargs),
            effect,
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
            known = self._port.tools.get(name)
            return known if known is not None else ToolDef(fn=tool, name=name)
        raise ConfigError(f"ctx.call expects a tool or function, got {type(tool).__name__}")

    async def sleep(self, seconds: float) -> None:
        """A durable timer: survives restarts; long sleeps suspend the run entirely."""
        await self._port.sleep(self._scope, seconds)

    async def wait_for(self, signal: str, timeout: float | None = None) -> Any:
        """Suspend until `keel signal RUN_ID <signal>` arrives; return its payload.

        Raises `keel.SignalTimeout` if `timeout` seconds pass first (a durable deadline).
        """
        return await self._port.wait_signal(self._scope, signal, timeout)

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
        return self._port.phase(self, name, check, retries, on_fail, queue)

    @property
    def degraded(self) -> list[str]:
        """Keys of steps so far that fell back to a default (data the run is missing)."""
        return self._port.degraded()

    def now(self) -> datetime:
        """The current time, recorded once so replay sees the same instant."""
        ts = self._port.value(self._scope, "now", time.time)
        return datetime.fromtimestamp(ts, UTC)

    def uuid(self) -> str:
        """A random UUID4 string, recorded so replay sees the same one."""
        out: str = self._port.value(self._scope, "uuid", lambda: str(_uuid.uuid4()))
        return out

    def random(self) -> float:
        """A float in [0, 1), recorded so replay sees the same one."""
        out: float = self._port.value(self._scope, "random", _random.random)
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
        body = None if tool is not None else fn
        return await self._port.map(
            self._scope, body, tool, name or label, items, concurrency, policy
        )

    async def gather(
        self, *awaitables: Awaitable[Any], require: CompletionPolicy | None = None
    ) -> MapResult[Any]:
        """Await heterogeneous steps concurrently, each in its own journal branch.

        Example: `account, history = await ctx.gather(ctx.call(a, 1), ctx.call(b, 1))`
        """
        policy = require if require is not None else All()
        return await self._port.gather(self._scope, awaitables, policy)


__all__ = ["Context"]
