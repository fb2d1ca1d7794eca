"""A pytest plugin that runs eval suites as tests: every `keel.evals.Suite` at module
level of a test file is one test, failing with the thresholds and regressions the gate
would report.

Opt in (it is never loaded into a pytest run by itself):

    pytest -p keel.evals.pytest_plugin tests/evals/
    # or in a conftest.py:  pytest_plugins = ["keel.evals.pytest_plugin"]

A suite's baseline: `--keel-eval-baseline-dir DIR` compares each suite with
`DIR/<suite name>.json` when that file exists.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest


class EvalFailed(AssertionError):
    """A suite's thresholds or baseline comparison failed (its report's failures)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("keel").addoption(
        "--keel-eval-baseline-dir",
        default=None,
        help="compare each eval suite with <dir>/<suite name>.json when it exists",
    )


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> Any:
    from keel.evals.suite import Suite

    if isinstance(obj, Suite):
        return [SuiteItem.from_parent(collector, name=name, suite=obj)]
    return None


class SuiteItem(pytest.Item):
    """One eval suite run as one test."""

    def __init__(self, *, suite: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite = suite
        self.add_marker("keel_eval")

    def runtest(self) -> None:
        folder = self.config.getoption("--keel-eval-baseline-dir")
        path = Path(folder) / f"{self.suite.name}.json" if folder else None
        baseline = path if path is not None and path.is_file() else None
        report = asyncio.run(self.suite.run(baseline=baseline))
        self.user_properties.append(("keel_eval", report.to_json()))
        if report.failures:
            raise EvalFailed("\n".join(report.failures))

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, EvalFailed):
            return f"eval suite {self.suite.name!r} failed:\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"eval suite {self.suite.name}"
