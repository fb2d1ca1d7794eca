"""Temporal's workflow sandbox around Keel's generic workflow.

The worker runs `KeelWorkflow` (keel.backends.temporal.workflow) in temporalio's
`SandboxedWorkflowRunner`, every module passed through: keel, pydantic and the libraries
Keel needs are imported once per worker, never re-imported per run, and so is your
module, whose top level (`app = keel.App(...)`, setup) runs once, as in any process.

What the sandbox stops, at the first run that does it: the workflow function is re-bound,
per run, to a copy of its module's globals where the clock, random, the file system,
the network and subprocesses are temporalio's restricted proxies, and `open()` and
`input()` are refused everywhere in workflow code. A refused call fails the
run with a Keel error naming the workflow, the call and what to use instead
(`refused`). `Backend(sandbox=False)` (`?sandbox=off`) is the escape hatch.

Example:
    Worker(client, task_queue="q", **hosted_workflows(app, features, sandbox=True), ...)
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from temporalio import workflow
from temporalio.worker import Interceptor, WorkflowInterceptorClassInput
from temporalio.worker.workflow_sandbox import (
    RestrictedWorkflowAccessError,
    SandboxMatcher,
    SandboxRestrictions,
)

from keel.backends.temporal.runner import keel_sandbox_runner
from keel.errors import ConfigError

if TYPE_CHECKING:
    from temporalio.worker import WorkflowRunner

    from keel.app import App
    from keel.engine.plugins import Features
    from keel.engine.registry import WorkflowDef

_HOSTED = "keel.hosted"  # the extern function that gives a workflow its worker's App

# What to use instead of a refused call, by the module it belongs to.
_INSTEAD = {
    "time": "read the time with ctx.now() and wait with ctx.sleep()",
    "datetime": "read the time with ctx.now()",
    "random": "draw with ctx.random() (replayed with the run)",
    "secrets": "draw with ctx.random() or ctx.uuid()",
    "uuid": "make ids with ctx.uuid()",
}
_EFFECT = "do it in a tool (@app.tool, run with ctx.call), whose result is recorded and replayed"


@dataclass(frozen=True)
class Hosted:
    """What a workflow run finds of its worker: the App, its features, and the restricted
    modules and members (id of the module or member -> the proxy that refuses it)."""

    app: App
    features: Features
    restricted: dict[int, Any] = field(repr=False)
    # where a run's end goes (ended.end_writer): a worker's; a Replayer has none
    ends: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)


class _Hosting(Interceptor):
    """Hands the worker's App to the workflow: a module-level workflow class is shared
    by every worker in the process (and the Replayer), so it cannot close over one."""

    def __init__(self, hosted: Hosted) -> None:
        self._hosted = hosted

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> None:
        here = self._hosted
        input.unsafe_extern_functions[_HOSTED] = lambda: here


def hosting(
    app: App,
    features: Features,
    *,
    sandbox: bool,
    ends: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The Worker (or Replayer) options that host `app`: its workflow runner (Temporal's
    sandbox, every module passed through, or none when `sandbox` is False) and the
    interceptor that hands the App to the generic workflow.

    Example:
        Replayer(workflows=[KeelWorkflow], **hosting(app, features_for(app), sandbox=True))
    """
    from temporalio.worker import UnsandboxedWorkflowRunner

    runner: WorkflowRunner = UnsandboxedWorkflowRunner()
    if sandbox:
        # Passed through, nothing is re-imported per run (no module top level re-runs,
        # no C extension loaded twice). The sandbox itself refuses only the builtins
        # (open, input): were it to wrap the modules it restricts as they are imported,
        # Keel's own lazy `import os` in workflow code would get the wrapper too. The
        # workflow function alone gets the restricted modules, re-bound by `sandboxed`.
        default = SandboxRestrictions.default
        builtins_only = SandboxMatcher(
            children={"__builtins__": default.invalid_module_members.children["__builtins__"]}
        )
        restrictions = dataclasses.replace(default, invalid_module_members=builtins_only)
        runner = keel_sandbox_runner(restrictions.with_passthrough_all_modules())
    hosted = Hosted(app, features, _proxies(), ends)
    return {"workflow_runner": runner, "interceptors": [_Hosting(hosted)]}


def hosted() -> Hosted:
    """The App of the worker running this workflow (inside a workflow only).

    Example:
        app = hosted().app
    """
    found = workflow.extern_functions().get(_HOSTED)
    if found is None:
        raise ConfigError(
            "Keel's generic Temporal workflow runs only in a worker built by "
            "keel.backends.temporal.serve (or replayer): this one has no Keel App"
        )
    here: Hosted = found()
    return here


def sandboxed(wf: WorkflowDef, here: Hosted) -> Callable[..., Awaitable[Any]]:
    """`wf`'s function as this run calls it: in the sandbox, re-bound to its module's
    globals with the restricted modules and members in place; a refused call raises
    `refused`'s Keel error.

    Example:
        result = await sandboxed(wf, hosted())(ctx, **kwargs)
    """
    fn = wf.fn
    if workflow.unsafe.in_sandbox() and _reboundable(fn):
        fn = _shadow(fn, here.restricted)

    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except RestrictedWorkflowAccessError as exc:
            raise refused(wf.name, exc.qualified_name) from None

    return call


def refused(workflow_name: str, qualified_name: str) -> ConfigError:
    """The Keel error for workflow `workflow_name` using `qualified_name` (as temporalio
    names it: "time.time", "__builtins__.open"), saying what to use instead.

    Example:
        raise refused("triage", "time.time")  # "... read the time with ctx.now() ..."
    """
    what = qualified_name.removeprefix("__builtins__.")
    instead = _INSTEAD.get(what.split(".")[0], _EFFECT)
    return ConfigError(
        f"workflow {workflow_name!r} called {what}, which Temporal's sandbox refuses: "
        f"a workflow must do the same thing when Temporal replays it, and {what} would "
        f'not; {instead} (docs/temporal.md, "The sandbox"; Backend(sandbox=False) '
        "runs a worker without it)"
    )


def _reboundable(fn: Any) -> TypeGuard[types.FunctionType]:
    # Keel's own workflows (keel.memory.extract) hold to the rule already
    module = getattr(fn, "__module__", None) or ""
    return isinstance(fn, types.FunctionType) and not module.startswith("keel.")


def _shadow(fn: types.FunctionType, restricted: dict[int, Any]) -> types.FunctionType:
    """`fn` over a copy of its module's globals where every restricted module or member
    is temporalio's proxy. Module state (dicts, registries, tools) stays shared: only
    names are swapped. The module's other functions keep their globals: a helper is
    yours, as a feature's effect between `op.begin()` and `op.wait()` is (the oracle
    example); functions nested in `fn` run over the copy."""
    module = fn.__globals__
    shadow = dict(module)
    for name, value in module.items():
        proxy = restricted.get(id(value))
        if proxy is not None:
            shadow[name] = proxy
    new = types.FunctionType(fn.__code__, shadow, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__doc__ = fn.__doc__
    new.__annotations__ = fn.__annotations__
    new.__dict__.update(fn.__dict__)
    return new


_PROXIES: dict[int, Any] = {}
_BUILT_FOR: set[str] = set()  # the restricted modules loaded when _PROXIES was built


def _proxies() -> dict[int, Any]:
    """id -> proxy for every module temporalio restricts and each of its public callables
    (`from time import time` binds the member, not the module). Built outside the
    sandbox, when a worker is made (it reads the worker's own modules, which stay alive,
    so their ids stay theirs), again only if a restricted module was loaded since; a
    proxy refuses a restricted use only while a workflow runs."""
    members = SandboxRestrictions.default.invalid_module_members
    loaded = {name for name in members.children if name in sys.modules}
    if loaded == _BUILT_FOR:
        return _PROXIES
    from temporalio.worker.workflow_sandbox._restrictions import (
        RestrictedModule,
        RestrictionContext,
    )

    context = RestrictionContext()
    context.is_runtime = True  # the proxies are only reached from workflow code
    found: list[tuple[types.ModuleType, Any, SandboxMatcher]] = []
    for top, child in members.children.items():
        mod = sys.modules.get(top)
        matcher = members.child_matcher(top)
        if top == "__builtins__" or not isinstance(mod, types.ModuleType) or matcher is None:
            continue  # builtins: refused by the sandbox itself; unimported: nothing bound
        proxy = RestrictedModule(mod, context, matcher)
        found.append((mod, proxy, matcher))
        for sub in child.children:  # http.client, concurrent.futures: bound as modules
            inner = getattr(mod, sub, None)
            inner_matcher = matcher.child_matcher(sub)
            if isinstance(inner, types.ModuleType) and inner_matcher is not None:
                found.append((inner, _wrapped(proxy, matcher, context, sub, inner), inner_matcher))
    proxies: dict[int, Any] = {id(mod): proxy for mod, proxy, _ in found if proxy is not mod}
    # A callable's own module first: socketserver binds time.monotonic as `time`, and a
    # refusal must name time.monotonic whichever module was imported first.
    for own in (True, False):
        for mod, proxy, matcher in found:
            for attr in dir(mod):
                value = getattr(mod, attr, None)
                if attr.startswith("_") or not callable(value) or id(value) in proxies:
                    continue
                if isinstance(value, types.ModuleType):
                    continue
                if own != (getattr(value, "__module__", None) == mod.__name__):
                    continue
                wrapped = _wrapped(proxy, matcher, context, attr, value)
                if wrapped is not value:  # only what the restrictions wrap
                    proxies[id(value)] = wrapped
    _PROXIES.update(proxies)  # workers made before keep theirs: ids stay valid
    _BUILT_FOR.clear()
    _BUILT_FOR.update(loaded)
    return _PROXIES


def _wrapped(proxy: Any, matcher: SandboxMatcher, context: Any, attr: str, value: Any) -> Any:
    """`proxy.attr` as workflow code sees it; `value` itself when the restrictions refuse
    even reading it (os.path before Python 3.14: the module proxy refuses it already)."""
    if matcher.match_access(context, attr):
        return value
    return getattr(proxy, attr, value)


__all__ = ["Hosted", "hosted", "hosting", "refused", "sandboxed"]
