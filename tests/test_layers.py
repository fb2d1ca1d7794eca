"""Keel's layers are a test, not a wish: an AST walk over every module in `keel/`.

Each module sits in one layer of the table below and may import only its own layer or
the ones ranked beneath it. A new module must be placed in the table before the suite
passes, so where it belongs is decided in review, not by accident.

Which imports count: every static import, at module level, inside functions (lazy
imports are still dependencies: they run as soon as the code path does) and under
`if TYPE_CHECKING:`. Typing-only imports count too: an upward type reference is the
first step towards an upward call, and the cure is cheap (a Protocol in the lower
layer naming what it needs, the way `keel.hitl.host.Host` names the App). Dynamic
imports (`importlib.import_module(name)`, as in the `keel` package's lazy exports) are
not seen, which is why the package facade itself ranks on top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
_PKG = _ROOT / "keel"

# Module prefix -> (rank, layer name). The longest matching prefix wins. A module may
# import modules of its own rank or lower; never higher.
_LAYERS: dict[str, tuple[int, str]] = {
    # foundation: records, the error taxonomy, ids, payload codecs, secrets
    "keel._version": (0, "foundation"),
    "keel._ids": (0, "foundation"),
    "keel._json_input": (0, "foundation"),
    "keel._jsonv": (0, "foundation"),  # JSON values (arrives with the store branch)
    "keel.errors": (0, "foundation"),
    "keel.types": (0, "foundation"),
    "keel.codec": (0, "foundation"),
    "keel.secret": (0, "foundation"),
    # plain policy objects the engine applies
    "keel.policy": (1, "policy"),
    # persistence behind small interfaces
    "keel.store": (2, "store"),
    # the embedded executor
    "keel.engine": (3, "engine"),
    # what the layers above the engine share: keel.toml / KEEL_* read into engine
    # Settings and a store URL, and the protocol App-level services name the App by
    "keel.config": (4, "host"),
    "keel.host": (4, "host"),
    # features built on the engine's primitive and hooks; they may use each other
    "keel.llm": (5, "features"),
    "keel.hitl": (5, "features"),
    "keel.observe": (5, "features"),
    "keel.memory": (5, "features"),
    "keel.evals": (5, "features"),
    "keel.drift": (5, "features"),
    "keel.embed": (5, "features"),
    "keel.escalations": (5, "features"),
    "keel.presence": (5, "features"),
    "keel.maintenance": (5, "features"),
    # the App: wires features into the engine, and what hands its runs out
    "keel.app": (6, "app"),
    "keel.features": (6, "app"),
    "keel.handle": (6, "app"),
    "keel.loader": (6, "app"),
    # other executors hosting an App's workflows (Temporal): beside the App
    "keel.backends": (6, "app"),
    # what people use: terminal rendering, then the server, then the command line
    "keel.console": (7, "console"),
    "keel.server": (8, "server"),
    "keel.cli": (9, "cli"),
    "keel.__main__": (9, "cli"),
    # the package facade re-exports the App, so it sits above everything
    "keel": (10, "keel facade"),
}

# The named contracts, said in the failure message when one is broken.
_CONTRACTS = {
    "store": "the store never imports the engine, features, the App, server or CLI",
    "engine": "the engine never imports llm, hitl, observe, memory, evals, the App, "
    "features, console, server or CLI",
    "features": "features never import keel.app, keel.server or keel.cli",
}

# Violations other branches of issue 13 are removing right now, as (importer, imported).
# The lead empties this when merging them; `test_known_violations_are_still_real` says
# which entries have gone stale. Never add to it: fix the import instead.
_KNOWN: set[tuple[str, str]] = set()

# Engine privates that features reached for before the durable-operation primitive
# (keel.engine.operation) replaced them; tests/test_engine_seam.py checks the rest.
_PRIVATE = ("_exec", "_scope", "_drain")
_KNOWN_PRIVATE: set[tuple[str, str]] = set()

# Server and CLI reach the store through App-level services; only these modules (the
# services the server owns) touch `.store` there.
_STORE_SERVICES = {"keel.server.identity", "keel.server.sessions"}


@dataclass(frozen=True)
class _Import:
    importer: str
    line: int
    imported: str
    typing_only: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(_PKG.rglob("*.py")):
        yield _module_name(path), path


def _is_submodule(name: str) -> bool:
    rel = Path(*name.split("."))
    return (_ROOT / rel).is_dir() or (_ROOT / rel).with_suffix(".py").is_file()


def _typing_nodes(tree: ast.Module) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                inside.update(id(n) for n in ast.walk(child))
    return inside


def _imports(module: str, path: Path) -> Iterator[_Import]:
    tree = ast.parse(path.read_text(), str(path))
    typing_only = _typing_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            # `from keel import config` imports keel.config, not the facade
            subs = [f"{source}.{a.name}" for a in node.names]
            targets = [s for s in subs if _is_submodule(s)] or [source]
        for target in targets:
            if target == "keel" or target.startswith("keel."):
                yield _Import(module, node.lineno, target, id(node) in typing_only)


def _layer(module: str) -> tuple[int, str] | None:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        found = _LAYERS.get(".".join(parts[:i]))
        if found is not None:
            return found
    return None


def _violations() -> list[tuple[_Import, str]]:
    out: list[tuple[_Import, str]] = []
    for module, path in _modules():
        own = _layer(module)
        assert own is not None
        for imp in _imports(module, path):
            theirs = _layer(imp.imported)
            if theirs is None or theirs[0] <= own[0]:
                continue
            rule = (
                f"layer {own[1]} (rank {own[0]}) never imports layer {theirs[1]} (rank {theirs[0]})"
            )
            if own[1] in _CONTRACTS:
                rule += f"; {_CONTRACTS[own[1]]}"
            out.append((imp, rule))
    return out


def _where(imp: _Import) -> str:
    rel = Path(*imp.importer.split("."))
    file = rel / "__init__.py" if (_ROOT / rel).is_dir() else rel.with_suffix(".py")
    kind = " (under TYPE_CHECKING)" if imp.typing_only else ""
    return f"{file}:{imp.line} imports {imp.imported}{kind}"


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m, _ in _modules() if _layer(m) is None or _layer(m) == _LAYERS["keel"]]
    unplaced = [m for m in unplaced if m != "keel"]
    assert not unplaced, (
        f"place these modules in tests/test_layers.py _LAYERS (which layer they belong "
        f"to is a design decision): {unplaced}"
    )


def test_no_upward_imports() -> None:
    found = [
        f"{_where(imp)}: {rule}"
        for imp, rule in _violations()
        if (imp.importer, imp.imported) not in _KNOWN
    ]
    assert not found, "upward imports:\n" + "\n".join(found)


def test_known_violations_are_still_real() -> None:
    real = {(imp.importer, imp.imported) for imp, _ in _violations()}
    stale = sorted(_KNOWN - real)
    assert not stale, f"fixed, so remove from _KNOWN in tests/test_layers.py: {stale}"


def _attributes(module: str, path: Path, names: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in names:
            yield node.lineno, node.attr


def test_no_engine_privates_outside_the_engine() -> None:
    found = [
        f"{path.relative_to(_ROOT)}:{line} uses .{attr}: nothing outside keel/engine "
        f"touches Context's or the execution's privates; use the durable-operation API"
        for module, path in _modules()
        if not module.startswith("keel.engine")
        for line, attr in _attributes(module, path, _PRIVATE)
        if (module, attr) not in _KNOWN_PRIVATE
    ]
    assert not found, "\n".join(found)


def test_known_private_uses_are_still_real() -> None:
    real = {
        (module, attr)
        for module, path in _modules()
        for _, attr in _attributes(module, path, _PRIVATE)
    }
    stale = sorted(_KNOWN_PRIVATE - real)
    assert not stale, f"fixed, so remove from _KNOWN_PRIVATE in tests/test_layers.py: {stale}"


@pytest.mark.parametrize("surface", ["keel.server", "keel.cli"])
def test_server_and_cli_use_app_services_not_the_store(surface: str) -> None:
    found = [
        f"{path.relative_to(_ROOT)}:{line} reads .store: go through an App-level service "
        f"(keel.server.identity, keel.server.sessions, keel.llm.costs, keel.hitl.inbox, "
        f"keel.presence, keel.maintenance, or the App's own methods)"
        for module, path in _modules()
        if (module == surface or module.startswith(surface + ".")) and module not in _STORE_SERVICES
        for line, _ in _attributes(module, path, ("store",))
    ]
    assert not found, "\n".join(found)


def test_the_checker_sees_what_it_must() -> None:
    """The walk itself: relative, lazy and typing-only imports are all found."""
    imports = list(_imports("keel.hitl.host", _PKG / "hitl" / "host.py"))
    assert any(i.imported == "keel.store.base" and i.typing_only for i in imports)
    app = {i.imported for i in _imports("keel.app", _PKG / "app.py")}
    assert "keel.config" in app and "keel" not in app  # `from keel import config`
    assert _layer("keel.store.sql.runs") == (2, "store")
    assert _layer("keel") == (10, "keel facade")
