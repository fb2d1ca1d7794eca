"""`ExecutionPort` on Temporal: what a `keel.Context` inside a Temporal workflow talks to.

The workflow function runs unchanged over this port; Temporal's history is the journal:
a tool call is an activity (keel.backends.temporal.activity), `ctx.sleep` a timer,
`ctx.wait_for` a wait for a signal, `ctx.now/uuid/random` come from the workflow's own
deterministic APIs. Keel's step keys and argument digests still apply: every activity
result carries the key and digest it was scheduled with, and replay compares them with
what the code asks for now, so a changed workflow fails with Keel's
`NonDeterminismError`, failing the workflow task with its text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from keel.backends.temporal.activity import ACTIVITY, attempt_timeout, check_size, keel_error
from keel.backends.temporal.attempts import scheduled_retries, workflow_retries
from keel.backends.temporal.decisions import current
from keel.backends.temporal.fanout import BRANCH, gather, map_items
from keel.backends.temporal.operation import TemporalOperation
from keel.backends.temporal.phase import TemporalPhase
from keel.engine.journal import Journal, Scope
from keel.engine.plugins import Features
from keel.engine.serde import from_json, revive, to_json, unannotated
from keel.errors import ConfigError, KeelError, SignalTimeout, from_structured
from keel.types import RunInfo, StepKind, StepRecord, StepStatus, StructuredError

if TYPE_CHECKING:
    from keel.engine.context import Context
    from keel.engine.operation import Operation
    from keel.engine.phase import Phase
    from keel.engine.recovery import StepPolicy
    from keel.engine.registry import ToolDef
    from keel.policy.completion import CompletionPolicy
    from keel.policy.fallback import Fallback
    from keel.types import MapResult

_NOT_YET = "is not supported on the Temporal backend yet (docs/temporal.md lists what is)"


def not_yet(what: str) -> NoReturn:
    """Refuse a feature this backend does not carry yet, naming it."""
    raise ConfigError(f"{what} {_NOT_YET}")


class _NoFeature:
    """A feature door that refuses, naming the feature (instead of "not configured")."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __call__(self, ctx: Context) -> Any:
        not_yet(self.what)


class _NoPeople:
    """People for a port built without an App's features (features_for plugs in
    keel.backends.temporal.people): requests need an App's store."""

    async def approval(self, ctx: Context, action: Any, **kw: Any) -> Any:
        not_yet("ctx.approval")

    async def approve_call(
        self, ctx: Context, tool: ToolDef, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        not_yet(f"tool {tool.name!r} needs approval; approvals")

    async def review_output(self, ctx: Context, **kw: Any) -> Any:
        not_yet("output review")


FEATURES = Features(
    models=_NoFeature("ctx.llm"),
    people=_NoPeople(),
    memory=_NoFeature("ctx.memory"),
    session=_NoFeature("ctx.session"),
)


def _to_person(fb: Fallback | None, err: StructuredError) -> bool:
    return (
        fb is not None
        and fb.kind == "human"
        and err.type not in ("SerializationError", "ConfigError")
    )


def _decisions_awaited() -> list[str]:
    """The people's decisions this run waits for (the `keel.state` query runs in the
    workflow, so its Decisions are at hand)."""
    try:
        return current().waiting_on()
    except AttributeError:  # a workflow instance without decisions (older code)
        return []


class TemporalExecution:
    """One Temporal workflow execution of a Keel run, as `Context` sees it.

    Example (what the generic workflow does):
        port = TemporalExecution(run, app.registry.tools, signals, Scope("", state))
        result = await wf.fn(Context(port, port.root), **kwargs)
    """

    def __init__(
        self,
        run: RunInfo,
        tools: Mapping[str, ToolDef],
        signals: dict[str, list[Any]],
        root: Scope,
        features: Features = FEATURES,
    ) -> None:
        self._run = run
        self._tools = tools
        self._features = features
        self._signals = signals  # name -> payloads not yet taken, filled by the handler
        self.root = root
        self.hard_stop: KeelError | None = None  # a hard stop: every later step raises it
        self._degraded: list[str] = []
        self._waiting: list[str] = []  # signals a ctx.wait_for is waiting for now
        self._sleeping: dict[str, float] = {}  # ctx.sleep timers running now: when they fire
        self.retries_used: dict[str, int] = {}  # tool -> retries granted (Retry(budget=))
        # the steps this workflow decides (values, timers, signal waits) as they happen:
        # [kind, scope, key, pos, name, arg, started, ended, output, error]; decided.py
        # turns them into journal entries once, at the end (or for a replay's reader)
        self.decided: list[list[Any]] = []

    @property
    def run(self) -> RunInfo:
        return self._run

    @property
    def features(self) -> Features:
        return self._features

    def refuse(self, what: str) -> NoReturn:
        """Refuse a feature this backend does not carry yet, naming it."""
        not_yet(what)

    @property
    def tools(self) -> Mapping[str, ToolDef]:
        return self._tools

    def current(self, bound: Scope) -> Scope:
        branch = BRANCH.get()
        if branch is not None and branch[0] is self:
            return branch[1]
        return bound

    def degraded(self) -> list[str]:
        return list(self._degraded)

    def superseded(self, prefix: str) -> None:
        """A phase attempt under `prefix` failed its checkpoint and runs again: its
        degraded steps are no longer the run's (as on Keel's engine)."""
        self._degraded = [k for k in self._degraded if not k.startswith(prefix)]

    def snapshot(self) -> dict[str, Any]:
        """What the run holds now, for the `keel.state` query: its typed state (JSON),
        the steps that fell back to a default, the signals it waits for."""
        state = self.root.state
        return {
            "state": None if state is None else state.snapshot(),
            "degraded": self.degraded(),
            "waiting_on": sorted(set(self._waiting) | set(_decisions_awaited())),
            # the earliest ctx.sleep timer running (a sleeping run is WAITING, as on the engine)
            "wake_at": min(self._sleeping.values(), default=None),
        }

    # -- steps ------------------------------------------------------------------------

    def operation(
        self,
        scope: Scope,
        kind: StepKind,
        name: str,
        digest: str,
        *,
        key_name: str | None = None,
        shown_input: Any = None,
    ) -> Operation:
        if self.hard_stop is not None:
            raise self.hard_stop
        key, pos = scope.next(key_name or name)
        op = TemporalOperation(self, scope, kind, name, digest, key, pos)
        return op  # type: ignore[return-value]  # the same protocol, Temporal's journal

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
        # `fn` (the tool's effect in this process) is never called: the activity runs it
        if self.hard_stop is not None:
            raise self.hard_stop
        if kind is not StepKind.TOOL:
            not_yet(f"a {kind.value} step")
        tool = self._tools.get(name)
        if tool is None:
            raise ConfigError(
                f"ctx.call({name}): on the Temporal backend a tool must be registered with "
                "@app.tool, so the activity worker can find it by name"
            )
        named = policy.input if policy is not None else None
        return await self.call_tool(scope, tool, digest, named, annotation)

    async def call_tool(
        self,
        scope: Scope,
        tool: ToolDef,
        digest: str,
        named: Any,
        annotation: Any,
        *,
        key: str | None = None,
        pos: int | None = None,
    ) -> Any:
        """Run `tool` with `named` arguments as the `keel.call` activity at the next key of
        `scope` (or at `key`/`pos`), checked against what history recorded there."""

        if self.hard_stop is not None:
            raise self.hard_stop
        name = tool.name
        if key is None or pos is None:
            key, pos = scope.next(name)
        args = to_json(named, what=f"arguments of {name!r}")
        check_size(args, f"the arguments of step {key!r}")
        request = {
            "tool": name,
            "key": key,
            "digest": digest,
            "args": from_json(args),
            "scope": scope.path,
            "pos": pos,
            "started": workflow.now().timestamp(),
        }

        async def schedule(ask: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = await self._schedule(tool, ask)
            return out

        if workflow_retries(tool):  # a retry budget, or feedback for a local tool
            return await scheduled_retries(self, scope, tool, request, annotation, schedule)
        try:
            done = await schedule(request)
        except (ActivityError, ApplicationError) as exc:
            # an activity's failure arrives as ActivityError(cause=ApplicationError); a
            # local activity's as the ApplicationError (its cause chain) itself
            found = keel_error(exc)
            if found is None:
                raise  # a timeout or cancellation Temporal decided: its own error
            err, was = found
            self.check(scope, pos, key, digest, was, StepKind.TOOL)
            return await self.give_up(scope, tool, request, err, annotation)
        self.check(scope, pos, key, digest, done, StepKind.TOOL)
        return revive(done["output"], annotation if annotation is not None else unannotated())

    async def _schedule(self, tool: ToolDef, request: dict[str, Any]) -> Any:
        """One `keel.call` activity (a local one for `local=True`), retried by Temporal
        as Keel's `Retry` decides in the activity."""

        retry = tool.retry
        attempts = retry.attempts if retry is not None else 1
        if tool.irreversible:
            attempts += 1  # after a lost attempt, one more: it reconciles (keel...intent)
        policy = RetryPolicy(
            maximum_attempts=attempts,
            # only for timeouts: every failure the tool raises names its own delay
            initial_interval=timedelta(seconds=max(retry.backoff if retry else 1, 0.001)),
        )
        if tool.options.get("local"):
            # @app.tool(local=True): run in this worker, no task-queue round trip (a
            # short, cheap tool); its result is recorded in history all the same
            return await workflow.execute_local_activity(
                ACTIVITY,
                request,
                start_to_close_timeout=attempt_timeout(tool),
                retry_policy=policy,
                summary=request["key"],
            )
        return await workflow.execute_activity(
            ACTIVITY,
            request,
            start_to_close_timeout=attempt_timeout(tool),
            retry_policy=policy,
            summary=request["key"],
        )

    def check(
        self, scope: Scope, pos: int, key: str, digest: str, was: dict[str, Any], kind: StepKind
    ) -> None:
        """Keel's journal check of this step against the one history recorded here
        (`was`: the key and digest the recorded step was scheduled with)."""
        was_key, was_digest = was.get("key", key), was.get("digest", digest)
        recorded = StepRecord(
            run_id=self._run.id,
            key=was_key,
            scope=scope.path,
            position=pos,
            kind=kind,
            name=was_key.rsplit("#", 1)[0],
            digest=was_digest,
            status=StepStatus.OK,
            started_at=0.0,
        )
        try:
            Journal(self._run.id, [recorded]).check(scope.path, pos, key, digest)
        except KeelError as exc:
            self.hard_stop = exc
            raise

    async def give_up(
        self,
        scope: Scope,
        tool: ToolDef,
        request: dict[str, Any],
        err: StructuredError,
        annotation: Any,
    ) -> Any:
        """Tool call `request` failed for good: its fallback decides, `Fallback.human`
        by waiting for a person (keel.backends.temporal.people)."""
        if _to_person(tool.fallback, err):
            from keel.backends.temporal.people import await_person

            return await await_person(self._run, scope, tool, request, err, annotation)
        return self.fall_back(tool.fallback, request["key"], err, annotation)

    def fall_back(
        self, fb: Fallback | None, key: str, err: StructuredError, annotation: Any
    ) -> Any:
        """The step failed for good: its fallback decides, as on Keel's engine."""
        unknown = err.type == "OutcomeUnknown"  # never degraded: the effect may have happened
        if fb is None or err.type in ("SerializationError", "ConfigError") or unknown:
            raise from_structured(err)
        if fb.kind == "degrade":
            self._degraded.append(key)
            return revive(fb.default, annotation)
        if fb.kind == "fail":
            err.fallback = "fail"
            stop = from_structured(err)
            self.hard_stop = stop  # the run fails even if the workflow catches this
            raise stop
        raise from_structured(err)  # Fallback.human: give_up hands it to a person

    def value(self, scope: Scope, name: str, make: Callable[[], Any]) -> Any:

        key, pos = scope.next(name)  # the same keys as on Keel's engine
        at = workflow.now().timestamp()
        if name == "now":
            out: Any = at
        elif name == "uuid":
            out = str(workflow.uuid4())
        elif name == "random":
            out = workflow.random().random()
        else:
            not_yet(f"a recorded value {name!r}")
        self.decided.append([StepKind.VALUE, scope.path, key, pos, name, None, at, at, out, None])
        return out

    async def sleep(self, scope: Scope, seconds: float) -> None:

        key, pos = scope.next("sleep")
        at = workflow.now().timestamp()
        step = [StepKind.SLEEP, scope.path, key, pos, "sleep", seconds, at, None, None, None]
        self.decided.append(step)
        if seconds > 0:
            self._sleeping[key] = at + seconds
            try:
                await workflow.sleep(seconds, summary=key)
            finally:
                self._sleeping.pop(key, None)
        # a zero or negative sleep starts no timer (Temporal refuses one): nothing to wait
        step[7] = workflow.now().timestamp()

    async def wait_signal(self, scope: Scope, signal: str, timeout: float | None) -> Any:

        key, pos = scope.next(f"signal:{signal}")
        at = workflow.now().timestamp()
        step = [StepKind.SIGNAL, scope.path, key, pos, signal, timeout, at, None, None, None]
        self.decided.append(step)
        waiting = self._signals.setdefault(signal, [])
        self._waiting.append(signal)
        try:
            await workflow.wait_condition(
                lambda: bool(waiting), timeout=timeout, timeout_summary=key
            )
        except TimeoutError:
            late = SignalTimeout(
                f"no {signal!r} signal arrived within {timeout}s",
                signal=signal,
                timeout=timeout,
                step=key,
            )
            step[7], step[9] = workflow.now().timestamp(), late
            raise late from None
        finally:
            self._waiting.remove(signal)
        step[7], step[8] = workflow.now().timestamp(), waiting[0]
        return waiting.pop(0)

    # -- fan-out (keel.backends.temporal.fanout) and what is not carried yet ---------------

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
        return await map_items(self, scope, fn, tool, label, items, concurrency, require)

    async def gather(
        self, scope: Scope, awaitables: tuple[Awaitable[Any], ...], require: CompletionPolicy
    ) -> MapResult[Any]:
        return await gather(self, scope, awaitables, require)

    def phase(
        self, ctx: Context, name: str, check: Any, retries: int, on_fail: str, queue: str
    ) -> Phase:
        phase = TemporalPhase(self, ctx.current_scope(), ctx, name, check, retries, on_fail, queue)
        return phase  # type: ignore[return-value]  # the same protocol, Temporal's keys


__all__ = ["FEATURES", "TemporalExecution", "not_yet"]
