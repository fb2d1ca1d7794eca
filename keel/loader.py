"""Find the `keel.App` and workflow a CLI argument like `examples/triage.py:triage` names."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from keel.errors import ConfigError, UnknownWorkflowError

if TYPE_CHECKING:
    from keel.app import App


def load_module(ref: str) -> ModuleType:
    """Import `ref`: a dotted module name or a path to a .py file."""
    if ref.endswith(".py") or "/" in ref:
        path = Path(ref).resolve()
        if not path.is_file():
            raise ConfigError(f"no such file: {ref}")
        name = f"keel_user_{path.stem}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import {ref}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ConfigError(f"importing {ref} failed: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(ref)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {ref!r}: {exc}") from None


def load_app(ref: str) -> App:
    """The one `keel.App` that the module `ref` names (a dotted name or a .py path)
    defines. Errors name the module as given: a .py path is imported under an internal
    name (keel_user_<stem>) that means nothing to the user."""
    from keel.app import App

    module = load_module(ref)
    apps = {id(v): v for v in vars(module).values() if isinstance(v, App)}
    if not apps:
        raise ConfigError(
            f"{ref} defines no keel.App: add one at module level, e.g."
            " `app = keel.App()`, and register workflows with `@app.workflow`",
            module=ref,
        )
    if len(apps) > 1:
        raise ConfigError(f"{ref} defines {len(apps)} keel.App instances; keep one", module=ref)
    return next(iter(apps.values()))


def load_workflow(target: str) -> tuple[App, str]:
    """`MODULE:WORKFLOW` -> (app, registered workflow name)."""
    module_ref, sep, wf_name = target.rpartition(":")
    if not sep or not module_ref or not wf_name:
        raise ConfigError(
            f"expected MODULE:WORKFLOW (e.g. examples/doc_summary.py:summarize_docs), "
            f"got {target!r}"
        )
    app = load_app(module_ref)
    if wf_name in app.registry.workflows:
        return app, wf_name
    for name, wf in app.registry.workflows.items():
        if wf.fn.__name__ == wf_name:
            return app, name
    known = ", ".join(sorted(app.registry.workflows)) or "none"
    raise UnknownWorkflowError(f"{module_ref} has no workflow {wf_name!r} (registered: {known})")
