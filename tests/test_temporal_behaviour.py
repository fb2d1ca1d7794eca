"""The behaviour contract: every scenario of tests/behaviour/scenarios.py gives the same
outcome on Keel's engine and on Temporal (a real dev server, every task replayed)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.behaviour.scenarios import SCENARIOS, Scenario, build
from tests.temporal_run import OnTemporal, executor_fixtures, on_keel

temporal, keel_app = executor_fixtures(build)


def _input(s: Scenario) -> dict[str, Any]:
    # flaky tools count attempts per token: each run gets a fresh one
    return {**s.input, "token": uuid.uuid4().hex} if "token" in s.input else s.input


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_same_outcome_on_both_executors(
    name: str, keel_app: Any, temporal: OnTemporal
) -> None:
    s = SCENARIOS[name]
    on_engine = await on_keel(keel_app, s.workflow, _input(s), s.signals, **s.options)
    on_temp = await temporal.run(s.workflow, _input(s), s.signals, **s.options)
    assert on_engine == s.expected
    assert on_temp == on_engine
