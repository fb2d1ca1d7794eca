"""The opt-in pytest plugin: a module-level `keel.evals.Suite` in a test file is a test
that passes or fails as the gate would; without `-p keel.evals.pytest_plugin` nothing
is collected."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SUITES = """
import keel
from keel import evals

app = keel.App("sqlite:///" + __import__("tempfile").mkdtemp() + "/unused.db",
               llm=keel.llm.ScriptedModel(rules=[("refund", "billing")], default="general"))


@app.workflow
async def classify(ctx: keel.Context, text: str) -> dict:
    return {"category": await ctx.llm.text(text, name="classify")}


CASES = [
    {"id": "a", "input": {"text": "refund please"}, "expected": {"category": "billing"}},
    {"id": "b", "input": {"text": "hello"}, "expected": {"category": "billing"}},
]
lenient = evals.Suite("lenient", classify, CASES, scorers=[evals.fields("category")],
                      thresholds={"fields": 0.5})
strict = evals.Suite("strict", classify, CASES, scorers=[evals.fields("category")],
                     thresholds={"fields": 0.9})
"""


def test_suites_run_as_tests_only_when_the_plugin_is_loaded(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suites=SUITES)
    result = pytester.runpytest_subprocess("-p", "keel.evals.pytest_plugin", "-q")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*eval suite 'strict' failed:*",
            "*fields: mean 0.500 below threshold 0.900 (failing cases: b)*",
        ]
    )
    without = pytester.runpytest_subprocess("-q")
    assert (
        "2 passed" not in without.stdout.str() and without.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    )
