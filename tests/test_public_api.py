"""Keel's public API is pinned: adding or removing a public name is a deliberate,
reviewed change to the lists below (temporalio's tests/test_workflow_exports.py does
the same). Every name resolves, `import keel` stays light, and the error taxonomy is
one documented tree under `keel.KeelError`."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import keel
import keel.drift
import keel.errors
import keel.evals
import keel.hitl
import keel.llm
from tests.limits import WAIT

_ROOT = Path(__file__).resolve().parents[1]

KEEL = [
    "AgentTurnLimit",
    "All",
    "App",
    "ApprovalRejected",
    "ApprovalTimedOut",
    "AtLeast",
    "BestEffort",
    "BudgetExceeded",
    "CassetteMiss",
    "CheckpointFailed",
    "CircuitBreaker",
    "CircuitOpen",
    "ConfigError",
    "Conflict",
    "Context",
    "ContextOverflow",
    "EffectNotApplied",
    "Escalation",
    "EscalationPacket",
    "EscalationRejected",
    "Fallback",
    "Hooks",
    "InputError",
    "ItemFailure",
    "KeelError",
    "LowConfidence",
    "MapFailed",
    "MapResult",
    "MemoryNotFound",
    "ModelUnavailable",
    "NonDeterminismError",
    "OutcomeUnknown",
    "PayloadUnreadable",
    "Redactor",
    "Retry",
    "RetryableError",
    "ReviewRejected",
    "RunCancelled",
    "RunFailed",
    "RunHandle",
    "RunInfo",
    "RunNotFound",
    "RunStatus",
    "RunSuspended",
    "Secret",
    "SecretUnavailable",
    "SerializationError",
    "SignalRefused",
    "SignalTimeout",
    "StateValidationError",
    "StepError",
    "StepEvent",
    "StepInfo",
    "StepRecord",
    "StoreError",
    "StructuredError",
    "UnknownWorkflowError",
    "ValidationFailed",
    "current_step",
    "drift",
    "evals",
    "hitl",
    "llm",
    "memory",
]

LLM = [
    "AgentResult",
    "Budgets",
    "Cassette",
    "Gateway",
    "LLMResponse",
    "ModelSpec",
    "Reply",
    "ScriptedModel",
    "ToolCall",
]

HITL = ["Approval", "Escalate", "NoveltyDetector", "Sample"]

EVALS = [
    "Call",
    "Case",
    "EvalRun",
    "HarnessError",
    "Paired",
    "Report",
    "Score",
    "Scorer",
    "Suite",
    "budget",
    "exact",
    "fields",
    "ignore",
    "judge",
    "latency",
    "load_baseline",
    "load_dataset",
    "near",
    "paired",
    "route",
    "same_set",
    "save_baseline",
    "trajectory",
]

# What `import keel` must not pull in: it is imported by every worker and CLI call.
HEAVY = [
    "litellm",
    "fastapi",
    "starlette",
    "uvicorn",
    "torch",
    "sentence_transformers",
    "temporalio",
    "opentelemetry.sdk",
    "typer",
    "rich",
    "redis",
    "pydantic",
]

DRIFT = [
    "ApprovalRate",
    "Confidence",
    "Distribution",
    "Judgement",
    "Metric",
    "Monitor",
    "MonitorStatus",
    "Pinned",
    "Rolling",
]


@pytest.mark.parametrize(
    ("module", "expected"),
    [(keel, KEEL), (keel.llm, LLM), (keel.hitl, HITL), (keel.evals, EVALS), (keel.drift, DRIFT)],
    ids=str,
)
def test_exports_are_exactly_these(module: object, expected: list[str]) -> None:
    exported = list(module.__all__)  # type: ignore[attr-defined]
    assert exported == sorted(exported), "keep __all__ sorted"
    assert exported == expected, (
        f"public API changed: added {sorted(set(exported) - set(expected))}, "
        f"removed {sorted(set(expected) - set(exported))}; if deliberate, update this test"
    )


@pytest.mark.parametrize("module", [keel, keel.llm, keel.hitl, keel.evals, keel.drift], ids=str)
def test_every_exported_name_resolves(module: object) -> None:
    for name in module.__all__:  # type: ignore[attr-defined]
        assert getattr(module, name) is not None, name


def test_keel_all_comes_from_the_lazy_map() -> None:
    """One source: `__all__` derives from `_EXPORTS`, and the map's modules are right."""
    assert keel.__all__ == sorted([*keel._EXPORTS, *keel._SUBPACKAGES])
    for name, module in keel._EXPORTS.items():
        value = getattr(keel, name)
        assert getattr(sys.modules[module], name) is value, (name, module)
    assert dir(keel) == keel.__all__


def test_the_type_checking_mirror_matches_the_map() -> None:
    """Type checkers read `keel/__init__.py`'s TYPE_CHECKING imports; they must name the
    same things from the same modules as the runtime map, and re-export them (`X as X`)."""
    tree = ast.parse((_ROOT / "keel" / "__init__.py").read_text())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"
    )
    mirrored: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module, ast.unparse(node)
        for alias in node.names:
            assert alias.asname == alias.name, f"re-export {alias.name} as {alias.name}"
            mirrored[alias.name] = node.module
    expected = {**keel._EXPORTS, **{sub: "keel" for sub in keel._SUBPACKAGES}}
    assert mirrored == expected


def test_import_keel_is_light() -> None:
    code = (
        "import sys, keel\n"
        "heavy = [m for m in sys.argv[1:] if m in sys.modules]\n"
        "own = sorted(m for m in sys.modules if m.startswith('keel'))\n"
        "print(heavy, own)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *HEAVY],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=_ROOT,
        check=True,
    ).stdout.strip()
    assert out == "[] ['keel', 'keel._version']"


def _public_errors() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name in keel.__all__
        if inspect.isclass(value := getattr(keel, name)) and issubclass(value, BaseException)
    }


def test_every_public_error_is_a_keel_error() -> None:
    errors = _public_errors()
    assert len(errors) > 20
    for name, cls in errors.items():
        assert issubclass(cls, keel.KeelError), name
        assert cls.__module__ == "keel.errors", f"{name}: errors live in keel/errors.py"
    defined = {
        name
        for name, value in vars(keel.errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }
    assert defined - set(errors) == {"LeaseLost"}, "a new error must be exported (or said internal)"


def _documented_tree() -> dict[str, str | None]:
    """docs/errors.md's tree as {class: parent}: depth is the name's column / 4."""
    text = (_ROOT / "docs" / "errors.md").read_text()
    block = re.search(r"```text\n(KeelError.*?)```", text, re.S)
    assert block, "docs/errors.md has the hierarchy as a ```text tree starting at KeelError"
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in block.group(1).splitlines():
        found = re.search(r"[A-Z]\w+", line)
        assert found, line
        depth = found.start() // 4
        path[depth:] = [found.group()]
        parents[found.group()] = path[depth - 1] if depth else None
    return parents


def test_errors_keep_the_documented_hierarchy() -> None:
    documented = _documented_tree()
    errors = _public_errors()
    assert set(documented) == set(errors), (
        f"docs/errors.md lacks {sorted(set(errors) - set(documented))}, "
        f"names unknown {sorted(set(documented) - set(errors))}"
    )
    for name, parent in documented.items():
        cls = errors[name]
        keel_bases = [b.__name__ for b in cls.__bases__ if issubclass(b, keel.KeelError)]
        assert keel_bases == ([parent] if parent else []), (
            f"{name} derives from {keel_bases}, docs/errors.md puts it under {parent}"
        )
