"""The behaviour contract: every scenario of tests/behaviour/scenarios.py gives the same
outcome on Keel's engine and on Temporal (a real dev server, every task replayed)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.behaviour.scenarios import SCENARIOS, Scenario, build
from tests.temporal_run import OnTemporal, on_keel, on_temporal


@pytest.fixture
async def temporal(temporal_address: str, store_url: str) -> AsyncIterator[OnTemporal]:
    app = build(store_url)
    async with on_temporal(app, temporal_address) as t:
        yield t
    await app.close()


@pytest.fixture
async def keel_app(store_url: str) -> AsyncIterator[Any]:
    from keel.engine.runtime import Settings

    app = build(store_url, settings=Settings(poll_interval=0.02))
    yield app
    await app.close()


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
