"""Drift monitors through real runs: declared on a workflow, each finished run stores one
value per monitor with no step in the workflow (the result, the typed state, the model
call's confidence, the run's approvals, its cost); the report judges them; a shift in a
scripted classifier's class mix raises an alert to a callable; bad declarations are
refused with what to do."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel.engine.runtime import Settings
from keel.llm import Reply, ScriptedModel
from tests.limits import WAIT


class Label(BaseModel):
    category: str
    urgent: bool = False


class Triage(BaseModel):
    category: str = ""


def _classifier(shift_after: int) -> ScriptedModel:
    """Answers billing 70% / outage 30% with confidence ~0.9, then, after `shift_after`
    calls, outage 70% with confidence ~0.6 (seeded: the same stream every time)."""
    rng = random.Random(7)
    calls = [0]

    def answer(messages: list[dict[str, Any]]) -> Reply:
        calls[0] += 1
        shifted = calls[0] > shift_after
        outage = rng.random() < (0.7 if shifted else 0.3)
        label = {"category": "outage" if outage else "billing"}
        logprob = -0.5 if shifted else -0.1
        return Reply(content=json.dumps(label), logprobs=[logprob + rng.uniform(-0.02, 0.02)] * 4)

    return ScriptedModel(answer)


MONITORS = dict(window=20, reference=keel.drift.Rolling(40), min_sample=15)


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[keel.App]:
    app = keel.App(store_url, settings=Settings(poll_interval=0.02), llm=_classifier(60))

    @app.workflow(
        state=Triage,
        monitors=[
            keel.drift.Distribution("category", **MONITORS),  # type: ignore[arg-type]
            keel.drift.Confidence("category", **MONITORS),  # type: ignore[arg-type]
            keel.drift.Metric("cost_usd", **MONITORS),  # type: ignore[arg-type]
            keel.drift.Metric("state.category", name="from_state"),
        ],
    )
    async def classify(ctx: keel.Context, text: str) -> dict[str, Any]:
        label = await ctx.llm.structured(Label, prompt=f"Classify: {text}")
        ctx.state.category = label.category
        return label.model_dump()

    yield app
    await app.close()


async def _run(app: keel.App, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        handle = await app.start("classify", {"text": f"ticket {i}"}, id=f"t{i}")
        await handle.result(timeout=WAIT)
    await app.stop_worker()  # drains the observer's background writes


async def test_each_run_stores_one_value_per_monitor_with_no_extra_step(app: keel.App) -> None:
    await _run(app, 3)
    store = app.store
    cats = await store.drift_values("classify", "distribution:category", 10)
    assert [v.run_id for v in cats] == ["t0", "t1", "t2"]  # in the order the runs ended
    assert {v.label for v in cats} <= {"billing", "outage"} and all(v.value is None for v in cats)
    conf = await store.drift_values("classify", "confidence:category", 10)
    assert all(0.88 < (v.value or 0) < 0.93 for v in conf)  # exp(-0.1 ± 0.02)
    cost = await store.drift_values("classify", "metric:cost_usd", 10)
    assert len(cost) == 3 and all(v.value is not None and v.value >= 0 for v in cost)
    # a path into the state that holds no number observes nothing, and says so by absence
    assert await store.drift_values("classify", "from_state", 10) == []
    steps = await store.load_steps("t0")
    assert [s.kind.value for s in steps] == ["llm"]  # the workflow's own step only
    rows = {r.monitor: r for r in await app.drift.report("classify")}
    assert rows["distribution:category"].status == "insufficient"
    assert rows["distribution:category"].window["recent"] == 3


async def test_a_class_mix_shift_alerts_the_callable_within_the_window(app: keel.App) -> None:
    events: list[dict[str, Any]] = []
    app.drift.on_alert(events.append)
    await _run(app, 60)  # stable: 60 runs, the reference fills
    rows = {r.monitor: r for r in await app.drift.report("classify")}
    assert rows["distribution:category"].status == "ok"
    assert not [e for e in events if e["event"] == "drift.alert"]
    await _run(app, 20, start=60)  # the model shifts: one recent window of shifted runs
    rows = {r.monitor: r for r in await app.drift.report("classify")}
    shift = rows["distribution:category"]
    assert shift.status == "alert" and shift.statistic is not None and shift.statistic > 0.2
    assert rows["confidence:category"].status == "alert"
    alerted = {e["monitor"] for e in events if e["event"] == "drift.alert"}
    assert {"distribution:category", "confidence:category"} <= alerted
    first = next(e for e in events if e["monitor"] == "distribution:category")
    assert first["workflow"] == "classify" and first["threshold"] == 0.2


async def test_approval_decisions_are_observed(store_url: str) -> None:
    app = keel.App(store_url, settings=Settings(poll_interval=0.02))

    @app.tool(irreversible=True)
    async def send(body: str) -> str:
        return f"sent {body}"

    @app.workflow(monitors=[keel.drift.ApprovalRate()])
    async def draft(ctx: keel.Context, body: str) -> str:
        try:
            return await ctx.call(send, body)
        except keel.ApprovalRejected:
            return "not sent"

    try:
        for run_id, approve in (("d1", True), ("d2", False)):
            handle = await app.start("draft", {"body": run_id}, id=run_id)
            [req] = await _pending(app, run_id)
            if approve:
                await app.approvals.approve(req.id, by="dana")
            else:
                await app.approvals.reject(req.id, "off tone", by="dana")
            await handle.result(timeout=WAIT)
        await app.stop_worker()
        got = await app.store.drift_values("draft", "approval_rate", 10)
        assert [(v.run_id, v.value) for v in got] == [("d1", 1.0), ("d2", 0.0)]
    finally:
        await app.close()


async def _pending(app: keel.App, run_id: str) -> list[Any]:
    import asyncio

    for _ in range(int(WAIT / 0.02)):
        found = [r for r in await app.approvals.list() if r.run_id == run_id]
        if found:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"no approval request for {run_id}")


async def test_a_lost_observation_is_recomputed_by_backfill(app: keel.App) -> None:
    await _run(app, 4)
    rows = await app.store.drift_values("classify", "distribution:category", 10)
    assert len(rows) == 4
    # as if the process died between run t4's end and its observation
    app.hooks.remove(app.drift.observer)
    await (await app.start("classify", {"text": "ticket 4"}, id="t4")).result(timeout=WAIT)
    assert len(await app.store.drift_values("classify", "distribution:category", 10)) == 4
    added = await app.drift.backfill("classify")
    assert added == 3  # t4's category, confidence and cost; the others were already there
    assert await app.drift.backfill("classify") == 0  # idempotent
    got = await app.drift.observe("t0")
    assert {v.monitor for v in got} == {
        "distribution:category",
        "confidence:category",
        "metric:cost_usd",
    }


def test_bad_declarations_are_refused_with_what_to_do() -> None:
    app = keel.App("sqlite:///:memory:")

    async def wf(ctx: keel.Context) -> None: ...

    with pytest.raises(keel.ConfigError, match=r"takes a list of keel\.drift monitors"):
        app.workflow(monitors=keel.drift.ApprovalRate())(wf)  # type: ignore[arg-type]
    with pytest.raises(keel.ConfigError, match="is not a drift monitor"):
        app.workflow(monitors=["category"])(wf)
    with pytest.raises(keel.ConfigError, match="two drift monitors named 'metric:cost_usd'"):
        app.workflow(monitors=[keel.drift.Metric("cost_usd"), keel.drift.Metric("cost_usd")])(wf)
    with pytest.raises(keel.ConfigError, match="min_sample 50 is larger than the window 20"):
        keel.drift.Distribution("category", window=20, min_sample=50)
    with pytest.raises(keel.ConfigError, match=r"reference= takes keel\.drift\.Rolling"):
        keel.drift.Metric("cost_usd", reference=500)  # type: ignore[arg-type]
    with pytest.raises(keel.ConfigError, match="the approved value must be JSON"):
        keel.drift.ApprovalRate(path="status", approved=object())
    assert "wf" not in app.registry.workflows  # nothing half-registered


def test_what_each_monitor_reads_of_a_run() -> None:
    from keel.drift.facts import RunFacts
    from keel.types import RunInfo, RunStatus

    run = RunInfo(
        id="r1",
        workflow="triage",
        status=RunStatus.SUCCEEDED,
        input={},
        result={"status": "sent", "label": {"kind": "billing"}, "items": [{"n": 3}], "ok": True},
        state={"category": "billing", "score": 0.5},
        created_at=10.0,
        updated_at=12.5,
        ended_at=12.5,
    )
    facts = RunFacts(run)
    sent = keel.drift.ApprovalRate(path="status", approved="sent")
    assert (sent.key, sent.observe(facts), sent.needs()) == ("approval_rate:status", 1.0, set())
    assert keel.drift.ApprovalRate(path="result.status", approved="rejected").observe(facts) == 0.0
    assert keel.drift.ApprovalRate(path="missing").observe(facts) is None
    assert keel.drift.ApprovalRate().observe(facts) is None  # no approval was decided
    assert keel.drift.Distribution("label.kind").observe(facts) == "billing"
    assert keel.drift.Distribution("state.category").observe(facts) == "billing"
    assert keel.drift.Distribution("ok").observe(facts) == "true"
    assert keel.drift.Distribution("label").observe(facts) is None  # not a category
    assert keel.drift.Metric("items.0.n").observe(facts) == 3.0
    assert keel.drift.Metric("score").observe(facts) == 0.5  # from the state
    assert keel.drift.Metric("duration_s").observe(facts) == 2.5
    assert keel.drift.Confidence("category").observe(facts) is None  # no model answer


async def test_every_monitored_value_is_an_otel_metric(metric_reader: Any, app: keel.App) -> None:
    await _run(app, 16)  # min_sample 15: the last judgements are real statuses

    points: dict[str, list[Any]] = {}
    data = metric_reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name.startswith("keel.drift."):
                    points.setdefault(metric.name, []).extend(
                        p
                        for p in metric.data.data_points
                        if p.attributes.get("gen_ai.workflow.name") == "classify"
                    )
    labels = {
        p.attributes["keel.drift.label"]: p.value
        for p in points["keel.drift.observations"]
        if "keel.drift.label" in p.attributes
    }
    assert sum(labels.values()) >= 16 and set(labels) <= {"billing", "outage"}
    confidence = [
        p
        for p in points["keel.drift.value"]
        if p.attributes["keel.drift.monitor"] == "confidence:category"
    ]
    assert confidence and confidence[0].count >= 16 and 0.88 < confidence[0].min < 0.93
    status = {p.attributes["keel.drift.monitor"]: p.value for p in points["keel.drift.status"]}
    assert status["distribution:category"] in (0, -1)  # ok or insufficient, never an alert


async def test_alerts_reach_a_webhook_and_a_failing_target_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from keel.drift.alert import Alerts

    got: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None: ...

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("pager down")

    alerts = Alerts()
    alerts.add(f"http://127.0.0.1:{server.server_port}/drift")
    alerts.add(broken)
    try:
        alerts.send({"event": "drift.alert", "workflow": "triage", "monitor": "approval_rate"})
        await alerts.drain()
    finally:
        server.shutdown()
    assert got == [{"event": "drift.alert", "workflow": "triage", "monitor": "approval_rate"}]
    assert "drift alert for triage/approval_rate failed: pager down" in caplog.text
    with pytest.raises(TypeError, match="a callable or an http"):
        alerts.add("hooks.example.com")
