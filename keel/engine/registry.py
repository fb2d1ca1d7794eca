"""Workflow and tool definitions: what `@app.workflow` and `@app.tool` register."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from keel.engine.keep import check_keep
from keel.engine.serde import unannotated
from keel.errors import ConfigError, InputError, validation_problems
from keel.policy.breaker import CircuitBreaker
from keel.policy.fallback import Fallback
from keel.policy.retry import NO_RETRY, Retry
from keel.policy.validation import normalise

if TYPE_CHECKING:
    from keel.engine.recovery import StepPolicy


def _hints(
    fn: Callable[..., Any], localns: dict[str, Any] | None = None, extras: bool = False
) -> dict[str, Any]:
    """Resolved annotations; `localns` (the decorating frame's locals) resolves classes
    defined inside a function under `from __future__ import annotations`. `extras` keeps
    `Annotated[...]` metadata (parameter constraints such as `Field(gt=0)`)."""
    try:
        return get_type_hints(inspect.unwrap(fn), localns=localns, include_extras=extras)
    except Exception:  # unresolvable forward refs: fall back to raw annotations
        return dict(getattr(fn, "__annotations__", {}))


@functools.lru_cache(maxsize=4096)
def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature
        return None


@functools.lru_cache(maxsize=4096)
def _binding(
    fn: Callable[..., Any],
) -> tuple[tuple[str, ...], tuple[str, ...], frozenset[str], bool] | None:
    """(positional parameter names, every parameter name in order and as a set, no
    *args/**kwargs/positional-only) of `fn`, for binding a call's arguments quickly."""
    sig = _signature(fn)
    if sig is None:
        return None
    params = list(sig.parameters.values())
    kinds = inspect.Parameter
    positional = tuple(p.name for p in params if p.kind is kinds.POSITIONAL_OR_KEYWORD)
    simple = all(p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY) for p in params)
    order = tuple(p.name for p in params)
    return positional, order, frozenset(order), simple


def _return_type(fn: Callable[..., Any], localns: dict[str, Any] | None = None) -> Any:
    hint = _hints(fn, localns).get("return", inspect.Signature.empty)
    return unannotated() if hint is inspect.Signature.empty else hint


@dataclass
class ToolDef:
    """A registered tool: a function whose every call is a journaled step."""

    fn: Callable[..., Any]
    name: str
    timeout: float | None = None
    irreversible: bool = False
    reconcile: Callable[..., Any] | None = None
    retry: Retry | None = None
    fallback: Fallback | None = None
    validate: tuple[Any, ...] = ()
    breaker: CircuitBreaker | None = None
    approval: Any = None  # a keel.hitl.Approval, False to opt out; irreversible implies one
    keep: Any = None  # a Pydantic model: the output is cut to its fields (keel.engine.keep)
    options: dict[str, Any] = field(default_factory=dict)
    return_type: Any = None
    is_async: bool = True
    localns: InitVar[dict[str, Any] | None] = None

    def __post_init__(self, localns: dict[str, Any] | None) -> None:
        self.keep = check_keep(self.name, self.keep)
        if self.keep is not None:  # what the workflow gets back (and replay revives)
            self.return_type = self.keep
        if self.return_type is None:
            self.return_type = _return_type(self.fn, localns)
        self.is_async = inspect.iscoroutinefunction(self.fn)
        self.validate = normalise(self.validate)
        if self.reconcile is not None and not self.irreversible:
            raise ConfigError(
                f"tool {self.name!r}: reconcile= only applies to irreversible=True tools"
            )
        if self.fallback is not None and not isinstance(self.fallback, Fallback):
            raise ConfigError(
                f"tool {self.name!r}: fallback= takes keel.Fallback.degrade(...), "
                f".human(...) or .fail(), not {self.fallback!r}"
            )
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise ConfigError(f"tool {self.name!r}: retry= takes a keel.Retry, not {self.retry!r}")

    def policy(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StepPolicy:
        """The recovery policy of one call of this tool."""
        from keel.engine.recovery import StepPolicy

        tool = self

        async def reconcile(key: str) -> Any:
            return await tool.run_reconcile(key, args, kwargs)

        return StepPolicy(
            retry=self.retry or NO_RETRY,
            fallback=self.fallback,
            validate=self.validate,
            breaker=self.breaker,
            irreversible=self.irreversible,
            reconcile=reconcile if self.reconcile is not None else None,
            input=self.named_args(args, kwargs),
        )

    def named_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The call's arguments by parameter name, as journaled, traced and redacted:
        `login("bob", "pw")` and `login(user="bob", password="pw")` look the same."""
        plan = _binding(self.fn)
        if plan is not None:
            positional, order, names, simple = plan
            if simple and len(args) <= len(positional) and kwargs.keys() <= names:
                # the common case, without inspect's bind (a step's hot path)
                given = dict(zip(positional, args, strict=False))  # fewer args: defaults
                if not kwargs:
                    return given
                if not given.keys() & kwargs.keys():
                    given.update(kwargs)
                    return {n: given[n] for n in order if n in given}  # parameter order
            sig = _signature(self.fn)
            assert sig is not None
            try:
                return dict(sig.bind(*args, **kwargs).arguments)
            except TypeError:  # the call itself fails with the clearer error
                pass
        return {"args": list(args), "kwargs": kwargs} if kwargs else list(args)

    @property
    def gated(self) -> bool:
        """Whether calls need a person's approval first."""
        if self.approval is False:
            return False
        return self.irreversible or self.approval is not None

    async def invoke(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.is_async:
            coro: Awaitable[Any] = self.fn(*args, **kwargs)
        else:
            coro = asyncio.to_thread(self.fn, *args, **kwargs)
        if self.timeout is None:
            return await coro
        try:
            async with asyncio.timeout(self.timeout) as limit:
                return await coro
        except TimeoutError:
            if not limit.expired():
                raise  # the tool's own timeout (e.g. its HTTP client's): keep its message
            raise TimeoutError(
                f"tool {self.name!r} did not finish within its timeout of {self.timeout:g}s "
                "(per attempt); raise timeout= on the tool if it needs longer"
            ) from None

    def input_model(self) -> type[BaseModel]:
        """A Pydantic model of the tool's parameters (for agents' argument checks)."""
        cached = self.options.get("_input_model")
        if cached is None:
            sig = inspect.signature(self.fn)
            hints = _hints(self.fn, extras=True)
            fields: dict[str, Any] = {}
            for p in sig.parameters.values():
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                default = ... if p.default is p.empty else p.default
                fields[p.name] = (hints.get(p.name, Any), default)
            cached = create_model(
                f"{self.name}_args", __config__=ConfigDict(extra="forbid"), **fields
            )
            self.options["_input_model"] = cached
        model: type[BaseModel] = cached
        return model

    async def run_reconcile(
        self, idempotency_key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Ask the tool's `reconcile` hook what became of an interrupted call."""
        assert self.reconcile is not None
        out = self.reconcile(idempotency_key, *args, **kwargs)
        return await out if inspect.isawaitable(out) else out


class Tool:
    """What `@app.tool` returns: still callable directly, and passable to `ctx.call`."""

    def __init__(self, definition: ToolDef) -> None:
        self.definition = definition
        self.__name__ = definition.name
        self.__doc__ = definition.fn.__doc__
        self.__wrapped__ = definition.fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.definition.fn(*args, **kwargs)

    def with_options(
        self,
        *,
        retry: Retry | None = None,
        fallback: Fallback | None = None,
        validate: Any = None,
        timeout: float | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> Tool:
        """This tool with some recovery options overridden for one call site.

        Example: `await ctx.call(lookup.with_options(retry=keel.Retry(attempts=8)), acct)`
        """
        d = self.definition
        changes: dict[str, Any] = {}
        if retry is not None:
            changes["retry"] = retry
        if fallback is not None:
            changes["fallback"] = fallback
        if validate is not None:
            changes["validate"] = validate
        if timeout is not None:
            changes["timeout"] = timeout
        if breaker is not None:
            changes["breaker"] = breaker
        return Tool(dataclasses.replace(d, **changes, localns=None))

    def __repr__(self) -> str:
        return f"<keel tool {self.definition.name}>"


@dataclass
class WorkflowDef:
    """A registered workflow: `async def wf(ctx, **inputs)` plus its typed state."""

    fn: Callable[..., Awaitable[Any]]
    name: str
    state: type[BaseModel] | None = None
    input_model: type[BaseModel] = BaseModel
    return_type: Any = None
    params: list[str] = field(default_factory=list)
    trace_content: bool = True  # prompts, responses and tool results in the local trace store
    novelty: Any = None  # a keel.hitl.NoveltyDetector: novel inputs go to review first
    sample: Any = None  # a keel.hitl.Sample: completed runs sampled into a review queue
    monitors: tuple[Any, ...] = ()  # keel.drift monitors: observed when a run ends
    localns: InitVar[dict[str, Any] | None] = None

    def __post_init__(self, localns: dict[str, Any] | None) -> None:
        if not inspect.iscoroutinefunction(self.fn):
            raise ConfigError(f"workflow {self.name!r} must be an `async def` taking ctx first")
        sig = inspect.signature(self.fn)
        params = list(sig.parameters.values())
        if not params:
            raise ConfigError(f"workflow {self.name!r} must take a Context as first parameter")
        hints = _hints(self.fn, localns, extras=True)
        fields: dict[str, Any] = {}
        for p in params[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise ConfigError(
                    f"workflow {self.name!r}: *args/**kwargs are not supported; name each input"
                )
            ann = hints.get(p.name, Any)
            default = ... if p.default is p.empty else p.default
            fields[p.name] = (ann, default)
        self.params = list(fields)
        self.input_model = create_model(
            f"{self.name}_input",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
        self.return_type = _return_type(self.fn, localns)
        if self.state is not None:
            if not (isinstance(self.state, type) and issubclass(self.state, BaseModel)):
                raise ConfigError(f"workflow {self.name!r}: state= must be a Pydantic model class")
            try:
                self.state()
            except ValidationError as exc:
                raise ConfigError(
                    f"workflow {self.name!r}: state model {self.state.__name__} must be "
                    f"constructible with no arguments (give every field a default): {exc}"
                ) from None

    def validate_input(self, data: Any) -> BaseModel:
        """Validate start input (a mapping of the workflow's keyword arguments)."""
        if data is None:
            data = {}
        elif isinstance(data, BaseModel) and len(self.params) == 1:
            data = {self.params[0]: data}
        if not isinstance(data, dict):
            raise InputError(
                f"input for workflow {self.name!r} must be an object of its keyword arguments "
                f"({', '.join(self.params) or 'none'}), not {type(data).__name__}",
                workflow=self.name,
            )
        try:
            return self.input_model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc, "(input)"))
            raise InputError(
                f"input for workflow {self.name!r} is invalid: {problems}",
                workflow=self.name,
                errors=[{"loc": [str(x) for x in e["loc"]], "msg": e["msg"]} for e in exc.errors()],
            ) from None

    def kwargs(self, data: dict[str, Any]) -> dict[str, Any]:
        model = self.validate_input(data)
        return {name: getattr(model, name) for name in self.params}


class Registry:
    """Workflows and tools of one App, by name."""

    def __init__(self) -> None:
        self.workflows: dict[str, WorkflowDef] = {}
        self.tools: dict[str, ToolDef] = {}

    def add_workflow(self, wf: WorkflowDef) -> None:
        old = self.workflows.get(wf.name)
        if old is not None and old.fn is not wf.fn:
            raise ConfigError(f"two workflows are named {wf.name!r}; pass name= to tell them apart")
        self.workflows[wf.name] = wf

    def add_tool(self, tool: ToolDef) -> None:
        old = self.tools.get(tool.name)
        if old is not None and old.fn is not tool.fn:
            raise ConfigError(f"two tools are named {tool.name!r}; pass name= to tell them apart")
        self.tools[tool.name] = tool

    def workflow(self, ref: Any) -> WorkflowDef:
        from keel.errors import UnknownWorkflowError

        name = ref if isinstance(ref, str) else getattr(ref, "__keel_workflow__", None)
        if isinstance(name, WorkflowDef):
            name = name.name
        if name is None:
            raise UnknownWorkflowError(
                f"{ref!r} is not a Keel workflow; decorate it with @app.workflow"
            )
        wf = self.workflows.get(name)
        if wf is None:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise UnknownWorkflowError(
                f"unknown workflow {name!r} (registered: {known})", workflow=name
            )
        return wf
