"""The engine's seams hold: features reach execution only through `ctx` and the
durable-operation primitive, and `RunExecution` is one implementation of the port."""

from __future__ import annotations

import ast
from pathlib import Path

from keel.engine.execution import RunExecution
from keel.engine.port import ExecutionPort

KEEL = Path(__file__).resolve().parents[1] / "keel"
# Attributes of Context, RunExecution and Operation that only keel/engine may touch.
PRIVATE = {"_exec", "_scope", "_bound", "_port", "_drain", "_ex", "_delta"}
ENGINE_STATE = {"rt", "meters", "extensions", "lost", "fatal"}


def _violations() -> list[str]:
    found = []
    for path in sorted(KEEL.rglob("*.py")):
        if path.relative_to(KEEL).parts[0] == "engine":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Attribute):
                continue
            journal = node.attr == "by_key" and getattr(node.value, "attr", None) == "journal"
            if node.attr in PRIVATE | ENGINE_STATE or journal:
                found.append(f"{path.relative_to(KEEL.parent)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_outside_the_engine_touches_its_private_attributes() -> None:
    assert _violations() == []


def test_run_execution_implements_every_member_of_the_execution_port() -> None:
    members = [
        name for name in dir(ExecutionPort) if not name.startswith("_") and name not in dir(object)
    ]
    assert {"run", "operation", "step", "value", "wait_signal", "map", "phase"} <= set(members)
    # `run` is an attribute each execution sets (the run it executes)
    missing = [name for name in members if not hasattr(RunExecution, name) and name != "run"]
    assert missing == []
