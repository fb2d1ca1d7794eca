"""The features an App plugs in — model calls, long-term memory, session state, a user's
own `ctx.operation` — on Temporal: the same outcome as on Keel's engine (a real dev
server, every workflow task replayed), each effect run once, and Keel's store holding
the run, its journal and its usage."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

import keel
from keel.backends.temporal import result, start
from keel.types import StepKind, StepStatus
from tests.behaviour import feature_scenarios
from tests.behaviour.feature_scenarios import FEATURE_SCENARIOS, build
from tests.temporal_run import OnTemporal, executor_fixtures, on_keel, on_temporal

temporal, keel_app = executor_fixtures(build)


def _fill(value: Any, tag: str) -> Any:
    """`value` with every "?" replaced by `tag` (each run's own user, question...)."""
    return json.loads(json.dumps(value).replace("?", tag))


@pytest.mark.parametrize("name", sorted(FEATURE_SCENARIOS))
async def test_same_outcome_on_both_executors(
    name: str, keel_app: Any, temporal: OnTemporal
) -> None:
    s = FEATURE_SCENARIOS[name]
    tag = uuid.uuid4().hex[:8]
    on_engine = await on_keel(keel_app, s.workflow, _fill(s.input, f"e{tag}"))
    on_temp = await temporal.run(s.workflow, _fill(s.input, f"t{tag}"))
    assert on_engine == tuple(_fill(s.expected, f"e{tag}"))
    assert on_temp == tuple(_fill(s.expected, f"t{tag}"))


async def test_each_effect_runs_once_though_every_task_replays(temporal: OnTemporal) -> None:
    question = f"q{uuid.uuid4().hex[:8]}"
    assert (await temporal.run("ask_oracle", {"question": question}))[0] == "ok"
    assert feature_scenarios.oracle_calls[question] == 2  # two operations, once each


async def test_keel_store_holds_the_run_its_journal_and_its_costs(temporal: OnTemporal) -> None:
    t = temporal
    rid = await start(t.app, t.client, t.backend, "classify", {"text": "refund me"})
    running = await t.app.get_run(rid)  # recorded when started, before Temporal ran it
    assert running.workflow == "classify"
    out = await result(t.app, t.client, rid)
    assert out["label"] == "billing"
    run = await t.app.get_run(rid)
    assert run.status is keel.RunStatus.SUCCEEDED
    assert run.result == out
    steps = {s.key: s for s in await t.app.steps(rid)}
    assert set(steps) == {"llm:text#0", "llm:structured#0"}
    assert all(s.kind is StepKind.LLM and s.status is StepStatus.OK for s in steps.values())
    by_run = {g.key: g for g in await t.app.store.usage_report("run")}
    assert by_run[rid].calls == 2
    assert by_run[rid].cost_usd > 0
    # each model call was an activity of its own (any worker may run it), not a local one
    events = (await t.client.get_workflow_handle(rid).fetch_history()).events
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled == ["keel.llm", "keel.llm"]
    spans = await t.app.trace(rid)
    names = [s.name for s in spans]
    assert sum(1 for n in names if n.startswith("chat")) == 2, names


async def test_a_tool_call_is_in_keel_store_too(temporal_address: str, store_url: str) -> None:
    app = keel.App(store_url)

    @app.tool(retry=keel.Retry(attempts=2, backoff=0.01))
    async def add(a: int, b: int) -> int:
        return a + b

    @app.workflow
    async def sums(ctx: keel.Context) -> int:
        return await ctx.call(add, 1, 2) + await ctx.call(add, 3, 4)

    async with on_temporal(app, temporal_address) as t:
        rid = await start(app, t.client, t.backend, "sums", {})
        assert await result(app, t.client, rid) == 10
    steps = sorted(await app.steps(rid), key=lambda s: s.position)
    assert [(s.key, s.output, s.input) for s in steps] == [
        ("add#0", 3, {"a": 1, "b": 2}),
        ("add#1", 7, {"a": 3, "b": 4}),
    ]
    await app.close()


async def test_a_forget_and_a_budget_leave_their_steps_in_keel_store(
    temporal: OnTemporal,
) -> None:
    """The forget's intent and outcome, and a budgeted operation's attempts, as Keel's
    engine journals them: the memory is gone from the store."""
    t = temporal
    user = uuid.uuid4().hex[:6]
    rid = await start(t.app, t.client, t.backend, "forget_fact", {"user": user})
    assert (await result(t.app, t.client, rid))["hits"] == 0
    steps = {s.key: s for s in await t.app.steps(rid)}
    memory_id = steps["memory.add#0"].output[0]
    assert steps["memory.forget#0"].status is StepStatus.OK
    assert steps["memory.forget#0"].output == memory_id
    assert steps["memory.forget#1"].status is StepStatus.ERROR
    assert await t.app.store.memory_rows(ids=[memory_id], vectors=False) == []
    rid = await start(t.app, t.client, t.backend, "budgeted_ops", {"question": user})
    await result(t.app, t.client, rid)
    steps = {s.key: s for s in await t.app.steps(rid)}
    assert (steps["flaky#0"].status, steps["flaky#0"].attempts) == (StepStatus.OK, 3)
    spent = steps["flaky#1"]
    assert spent.status is StepStatus.ERROR and spent.error is not None
    assert (spent.error.type, spent.attempts) == ("BudgetExceeded", 1)


async def test_a_gateway_retry_budget_leaves_each_attempt_in_history_and_store(
    temporal: OnTemporal,
) -> None:
    """A Gateway's `Retry(budget=)`: the workflow schedules each model call attempt (an
    activity each, any worker), and Keel's store shows the attempts as the engine does."""
    t = temporal
    question = uuid.uuid4().hex[:6]
    rid = await start(t.app, t.client, t.backend, "budgeted_llm", {"question": question})
    assert (await result(t.app, t.client, rid))[0] == "up after 3 asks"
    steps = {s.key: s for s in await t.app.steps(rid)}
    assert (steps["llm:flaky#0"].status, steps["llm:flaky#0"].attempts) == (StepStatus.OK, 3)
    degraded = steps["llm:flaky#1"]  # its fallback answered
    assert degraded.error is not None and degraded.error.type == "BudgetExceeded"
    spent = steps["llm:flaky#2"]
    assert spent.status is StepStatus.ERROR and spent.error is not None
    assert (spent.error.type, spent.attempts) == ("BudgetExceeded", 1)
    assert spent.error.cause is not None and spent.error.cause.type == "ModelUnavailable"
    events = (await t.client.get_workflow_handle(rid).fetch_history()).events
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled == ["keel.llm"] * 5  # three attempts, then two calls refused a retry


async def test_a_budgeted_model_call_waits_what_the_provider_asks(temporal: OnTemporal) -> None:
    """Retry-After under a Gateway's budget: the workflow's timer before the next attempt
    is the 0.05 s the provider asked for (the feature app's Retry has no backoff of its
    own), and the retry is counted in Keel's store."""
    t = temporal
    question = uuid.uuid4().hex[:6]
    rid = await start(t.app, t.client, t.backend, "rate_limited", {"question": question})
    assert await result(t.app, t.client, rid) == "answered on ask 2"
    events = (await t.client.get_workflow_handle(rid).fetch_history()).events
    timers = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
        for e in events
        if e.HasField("timer_started_event_attributes")
    ]
    assert timers == [0.05]
    steps = {s.key: s for s in await t.app.steps(rid)}
    assert (steps["llm:slow#0"].status, steps["llm:slow#0"].attempts) == (StepStatus.OK, 2)
