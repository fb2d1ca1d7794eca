"""UsageStore conformance: what was spent (by run, workflow, tenant, since), cost
reports grouped by a column, and the response cache's expiry."""

from __future__ import annotations

from typing import Any

import pytest

from keel.errors import ConfigError
from keel.store import Store
from keel.store.records import StepWrite, UsageGroup
from keel.types import StepKind
from tests.store.kit import claimed, commit, step, usage

DAY = 20_000 * 86400.0  # a UTC midnight


def _llm(run_id: str, key: str, pos: int, cost: float, at: float, **kw: Any) -> StepWrite:
    return step(run_id, key, pos, b'"ok"', usage=usage(cost, **kw), kind=StepKind.LLM, at=at)


async def _metered(store: Store) -> None:
    await claimed(store, "r1", workflow="wf", tenant="acme")
    await claimed(store, "r2", workflow="other")
    await commit(
        store,
        "r1",
        "A",
        _llm("r1", "llm#0", 0, 0.25, DAY + 10, model="big", tokens=10),
        _llm("r1", "llm#1", 1, 0.5, DAY + 20, model="small", hit=True),
    )
    await commit(store, "r1", "A", _llm("r1", "llm#2", 2, 1.0, DAY - 5))
    await commit(store, "r2", "A", _llm("r2", "llm#0", 0, 2.0, DAY + 30))


async def test_spent_sums_cost_by_every_filter(store: Store) -> None:
    await _metered(store)
    assert await store.spent() == pytest.approx(3.75)
    assert await store.spent(run_id="r1") == pytest.approx(1.75)
    assert await store.spent(workflow="wf", since=DAY) == pytest.approx(0.75)
    assert await store.spent(workflow="wf", since=DAY + 1) == pytest.approx(0.75)
    assert await store.spent(workflow="wf", since=DAY - 86400) == pytest.approx(1.75)
    assert await store.spent(tenant="acme", since=DAY) == pytest.approx(0.75)
    assert await store.spent(tenant="nobody") == 0
    assert await store.spent(workflow="other") == pytest.approx(2.0)


async def test_a_rewritten_step_replaces_its_cost(store: Store) -> None:
    await _metered(store)
    await commit(store, "r1", "A", _llm("r1", "llm#1", 1, 0.125, DAY + 20))
    assert await store.spent(workflow="wf", since=DAY) == pytest.approx(0.375)
    assert await store.spent(workflow="wf", since=DAY + 1) == pytest.approx(0.375)


async def test_usage_report_groups_costliest_first(store: Store) -> None:
    await _metered(store)
    by_wf = await store.usage_report("workflow")
    assert all(isinstance(g, UsageGroup) for g in by_wf)
    assert [(g.key, g.calls, g.cost_usd) for g in by_wf] == [
        ("other", 1, pytest.approx(2.0)),
        ("wf", 3, pytest.approx(1.75)),
    ]
    (big,) = [g for g in await store.usage_report("model") if g.key == "big"]
    assert (big.calls, big.input_tokens, big.output_tokens, big.cache_hits) == (1, 10, 10, 0)
    (small,) = [g for g in await store.usage_report("model") if g.key == "small"]
    assert small.cache_hits == 1
    assert [g.key for g in await store.usage_report("run", since=DAY)] == ["r2", "r1"]
    assert [g.key for g in await store.usage_report("tenant", workflow="wf")] == ["acme"]
    steps = await store.usage_report("step", workflow="wf", since=DAY)
    assert {g.key for g in steps} == {"r1:llm#0", "r1:llm#1"}
    with pytest.raises(ConfigError, match="cannot group costs by 'colour'"):
        await store.usage_report("colour")


async def test_cache_entries_expire(store: Store) -> None:
    await store.cache_put("k", "v1", expires_at=100.0)
    await store.cache_put("forever", "f", expires_at=None)
    assert await store.cache_get("k", 99.0) == "v1"
    assert await store.cache_get("k", 100.0) is None  # expired at its expiry
    assert await store.cache_get("missing", 0.0) is None
    await store.cache_put("k", "v2", expires_at=200.0)  # a put replaces
    assert await store.cache_get("k", 150.0) == "v2"
    assert await store.cache_purge(150.0) == 0
    assert await store.cache_purge(200.0) == 1
    assert await store.cache_get("k", 0.0) is None
    assert await store.cache_get("forever", 1e12) == "f"
