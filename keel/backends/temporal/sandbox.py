"""Temporal's workflow sandbox around Keel's generic workflow.

The worker runs `KeelWorkflow` (keel.backends.temporal.workflow) in temporalio's
`SandboxedWorkflowRunner`, every module passed through: keel, pydantic and the libraries
Keel needs are imported once per worker, never re-imported per run, and so is your
module, whose top level (`app = keel.App(...)`, setup) runs once, as in any process.

What the sandbox stops, at the first run that does it: the workflow function and the
functions of its module are re-bound, per run, to globals where the clock, random, the
file system, the network and subprocesses are temporalio's restricted proxies, and
`open()` and `input()` are refused everywhere in workflow code. A refused call fails the
run with a Keel error naming the workflow, the call and what to use instead
(`refused`). `Backend(sandbox=False)` (`?sandbox=off`) is the escape hatch.

Example:
    Worker(client, task_queue="q", **hosted_workflows(app, features, sandbox=True), ...)
"""

from __future__ import annotations

import builtins
import sys
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.worker import Interceptor, WorkflowInterceptorClassInput
from temporalio.worker.workflow_sandbox import (
    RestrictedWorkflowAccessError,
    SandboxedWorkflowRunner,
    SandboxRestrictions,
)

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
    """What a workflow run finds of its worker: the App, its features, and where the
    restricted members live (id of a module or member -> its dotted path)."""

    app: App
    features: Features
    restricted: dict[int, str] = field(repr=False)


class _Hosting(Interceptor):
    """Hands the worker's App to the workflow: a module-level workflow class is shared
    by every worker in the process (and the Replayer), so it cannot close over one."""

    def __init__(self, hosted: Hosted) -> None:
        self._hosted = hosted

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> None:
        here = self._hosted
        input.unsafe_extern_functions[_HOSTED] = lambda: here


def hosting(app: App, features: Features, *, sandbox: bool) -> dict[str, Any]:
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
        # no C extension loaded twice); what is restricted is re-bound by `sandboxed`
        restrictions = SandboxRestrictions.default.with_passthrough_all_modules()
        runner = SandboxedWorkflowRunner(restrictions=restrictions)
    hosted = Hosted(app, features, _restricted_paths())
    return {"workflow_runner": runner, "interceptors": [_Hosting(hosted)]}


def hosted() -> Hosted:
    """The App of the worker running this workflow (inside a workflow only)."""
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
    globals with the restricted modules and members in place (and its module's other
    functions likewise); a refused call raises `refused`'s Keel error."""
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
    names it: "time.time", "__builtins__.open"), saying what to use instead."""
    what = qualified_name.removeprefix("__builtins__.")
    instead = _INSTEAD.get(what.split(".")[0], _EFFECT)
    return ConfigError(
        f"workflow {workflow_name!r} called {what}, which Temporal's sandbox refuses: "
        f"a workflow must do the same thing when Temporal replays it, and {what} would "
        f'not; {instead} (docs/temporal.md, "The sandbox"; Backend(sandbox=False) '
        "runs a worker without it)"
    )


def _reboundable(fn: Any) -> bool:
    # Keel's own workflows (keel.memory.extract) hold to the rule already
    module = getattr(fn, "__module__", None) or ""
    return isinstance(fn, types.FunctionType) and not module.startswith("keel.")


def _shadow(fn: types.FunctionType, restricted: dict[int, str]) -> types.FunctionType:
    """`fn` over a copy of its module's globals where every restricted module or member
    is the sandbox's proxy and the module's own functions are re-bound the same way.
    Module state (dicts, registries, tools) stays shared: only names are swapped."""
    module = fn.__globals__
    shadow = dict(module)
    for name, value in module.items():
        path = restricted.get(id(value))
        if path is not None:
            shadow[name] = _in_sandbox(path)
    for name, value in module.items():
        if isinstance(value, types.FunctionType) and value.__globals__ is module:
            shadow[name] = _rebind(value, shadow)
    own = shadow.get(fn.__name__)
    if isinstance(own, types.FunctionType) and own.__code__ is fn.__code__:
        return own
    return _rebind(fn, shadow)  # a closure (defined in a function): re-bound alone


def _rebind(fn: types.FunctionType, globals_: dict[str, Any]) -> types.FunctionType:
    new = types.FunctionType(fn.__code__, globals_, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__doc__ = fn.__doc__
    new.__annotations__ = fn.__annotations__
    new.__dict__.update(fn.__dict__)
    return new


def _in_sandbox(path: str) -> Any:
    """The object at dotted `path` as code imported in the sandbox sees it (a module of
    the restrictions is wrapped as it is imported, so its members come back proxied)."""
    top, *rest = path.split(".")
    found: Any = builtins.__import__(top)  # the sandbox's importer while it runs
    for part in rest:
        found = getattr(found, part)
    return found


_PATHS: dict[int, str] = {}


def _restricted_paths() -> dict[int, str]:
    """id -> dotted path of every module temporalio restricts and of its public callables
    (`from time import time` binds the member, not the module). Built once, outside the
    sandbox (it reads the worker's own modules)."""
    if _PATHS:
        return _PATHS
    matcher = SandboxRestrictions.default.invalid_module_members
    modules: list[tuple[str, types.ModuleType]] = []
    for top, child in matcher.children.items():
        mod = sys.modules.get(top)
        if top == "__builtins__" or not isinstance(mod, types.ModuleType):
            continue  # builtins: refused by the sandbox itself; unimported: nothing bound
        modules.append((top, mod))
        for sub in child.children:
            inner = getattr(mod, sub, None)
            if isinstance(inner, types.ModuleType):
                modules.append((f"{top}.{sub}", inner))
    paths: dict[int, str] = {}
    for path, mod in modules:
        paths.setdefault(id(mod), path)
    for path, mod in modules:
        for attr in dir(mod):
            value = getattr(mod, attr, None)
            if attr.startswith("_") or not callable(value) or id(value) in paths:
                continue
            if isinstance(value, types.ModuleType):
                continue
            paths[id(value)] = f"{path}.{attr}"
    _PATHS.update(paths)
    return _PATHS


__all__ = ["Hosted", "hosted", "hosting", "refused", "sandboxed"]
