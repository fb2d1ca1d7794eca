"""Approvals, gated tools, escalations and timeouts for runs on Temporal, decided through
Keel (`app.approvals`, `app.escalations`, the console's /api/v1), on a real dev server.

The request lands in Keel's store (so lists and the audit trail show it); the decision
reaches the workflow as the update `keel.decide`, whose validator refuses a decision
the run cannot take: the caller gets the refusal, and the run keeps waiting."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

import keel
from keel.backends.temporal import Backend, connect, result, serve, start
from keel.engine.runtime import Settings
from keel.types import Escalation, ReviewRequest
from tests.behaviour.people_scenarios import PEOPLE_SCENARIOS, build, calls, escalated, pending
from tests.limits import WAIT


@dataclass
class Env:
    app: keel.App
    client: Any
    backend: Backend

    async def start(self, workflow: str, input: dict[str, Any], **kw: Any) -> str:
        rid = f"{workflow}-{uuid.uuid4().hex[:8]}"
        return await start(self.app, self.client, self.backend, workflow, input, run_id=rid, **kw)

    async def result(self, rid: str) -> Any:
        return await asyncio.wait_for(result(self.app, self.client, rid), WAIT)

    async def request(self, rid: str) -> ReviewRequest:
        return await pending(self.app, rid)

    async def escalation(self, rid: str) -> Escalation:
        return await escalated(self.app, rid)


@pytest.fixture
async def env(temporal_address: str, store_url: str) -> AsyncIterator[Env]:
    backend = Backend(address=temporal_address, task_queue=f"p-{uuid.uuid4().hex[:12]}")
    app = build(store_url, backend=backend)
    client = await connect(backend, app=app)
    async with serve(app, client, backend, max_cached_workflows=0):
        yield Env(app, client, backend)
    await app.close()


@pytest.fixture
async def engine_app(store_url: str) -> AsyncIterator[keel.App]:
    app = build(store_url, settings=Settings(poll_interval=0.02))
    yield app
    await app.close()


def _outcome(value: Any = None, failed: keel.RunFailed | None = None) -> tuple[Any, ...]:
    if failed is not None:
        assert failed.error is not None
        return ("failed", failed.error.type, failed.error.step)
    return ("ok", value)


@pytest.mark.parametrize("name", sorted(PEOPLE_SCENARIOS))
async def test_same_outcome_on_both_executors(name: str, env: Env, engine_app: keel.App) -> None:
    """The same workflow, decided the same way through Keel, ends the same on Keel's
    engine and on Temporal."""
    s = PEOPLE_SCENARIOS[name]
    handle = await engine_app.start(s.workflow, s.input)
    await s.decide(engine_app, handle.id)
    try:
        on_engine = _outcome(await asyncio.wait_for(handle.result(), WAIT))
    except keel.RunFailed as exc:
        on_engine = _outcome(failed=exc)
    rid = await env.start(s.workflow, s.input)
    await s.decide(env.app, rid)
    try:
        on_temporal = _outcome(await env.result(rid))
    except keel.RunFailed as exc:
        on_temporal = _outcome(failed=exc)
    assert on_engine == s.expected
    assert on_temporal == on_engine


async def test_an_approval_is_listed_then_approved_through_keel(env: Env) -> None:
    rid = await env.start("ship", {"order": "o-1"})
    req = await env.request(rid)
    assert req.id == f"{rid}:approval:ship#0"  # the id Keel's engine gives it
    assert (req.kind, req.queue, req.status) == ("approval", "shipping", "pending")
    [waiting] = [s for s in await env.app.steps(rid) if s.key == "approval:ship#0"]
    assert waiting.status.value == "pending"
    run = await env.app.get_run(rid)  # as on Keel's engine: WAITING for the review
    assert (run.status, run.waiting_on) == (keel.RunStatus.WAITING, [f"review:{req.id}"])
    done = await env.app.approvals.approve(req.id, by="ada", note="packed")
    assert (done.status, done.decided_by) == ("approved", "ada")
    assert await env.result(rid) == "shipped o-1: approved by ada (packed)"
    [step] = [s for s in await env.app.steps(rid) if s.key == "approval:ship#0"]
    assert (step.status.value, step.output["by"]) == ("ok", "ada")
    actions = [a["action"] for a in await env.app.approvals.audit(req.id)]
    assert actions[-1] == "approved"
    again = env.app.approvals.approve(req.id, by="ada")
    with pytest.raises(keel.Conflict, match="a decision is final"):
        await again


async def test_a_rejection_reaches_the_workflow(env: Env) -> None:
    rid = await env.start("ship", {"order": "o-2"})
    req = await env.request(rid)
    await env.app.approvals.reject(req.id, "address unknown", by="ada")
    out = await env.result(rid)
    assert out.startswith("not shipped: action 'ship' was rejected by ada: address unknown")


async def test_a_gated_tool_runs_with_the_edited_arguments(env: Env) -> None:
    order = f"o-{uuid.uuid4().hex[:6]}"
    rid = await env.start("pay", {"order": order, "amount": 40})
    req = await env.request(rid)
    assert (req.tool, req.args, req.queue) == ("refund", {"order": order, "amount": 40}, "payments")
    assert not [c for c in calls if c[0] == order]  # nothing ran before the decision
    await env.app.approvals.edit(req.id, {"order": order, "amount": 25}, by="rita")
    assert await env.result(rid) == f"refunded 25 on {order}"
    assert [c for c in calls if c[0] == order] == [(order, 25)]
    await _replays(env, rid)


async def _replays(env: Env, rid: str) -> None:
    """The decision is in history: the run replays to the same end, writing nothing."""
    from keel.backends.temporal import replayer

    history = await env.client.get_workflow_handle(rid).fetch_history()
    replayed = await replayer(env.app).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure


async def test_an_invalid_edit_is_refused_and_the_run_keeps_waiting(env: Env) -> None:
    """Refused by Keel's own check (as on the engine) and, sent straight to Temporal, by
    the update's validator: nothing in history, the run still waits; then a valid
    decision finishes it."""
    from temporalio.client import WorkflowUpdateFailedError

    from keel.backends.temporal.decisions import DECIDE_UPDATE

    order = f"o-{uuid.uuid4().hex[:6]}"
    rid = await env.start("pay", {"order": order, "amount": 40})
    req = await env.request(rid)
    with pytest.raises(keel.InputError, match=r"edited arguments for refund are invalid"):
        await env.app.approvals.edit(req.id, {"order": order, "amount": -5}, by="rita")
    handle = env.client.get_workflow_handle(rid)

    async def refused(target: str, decision: dict[str, Any]) -> str:
        with pytest.raises(WorkflowUpdateFailedError) as caught:
            await handle.execute_update(DECIDE_UPDATE, {"id": target, "decision": decision})
        return str(caught.value.cause)

    bad = {"status": "edited", "args": {"order": order, "amount": -5}, "by": "mallory"}
    assert "amount" in await refused(req.id, bad)
    assert "not waiting for a decision" in await refused(f"{rid}:x#0", {"status": "approved"})
    wrong = {"status": "resolved", "by": "mallory"}
    assert "decide it as one of approved, edited, rejected" in await refused(req.id, wrong)
    assert (await env.app.approvals.get(req.id)).status == "pending"
    history = await handle.fetch_history()
    assert not any(
        e.HasField("workflow_execution_update_accepted_event_attributes") for e in history.events
    )
    await env.app.approvals.approve(req.id, by="rita")
    assert await env.result(rid) == f"refunded 40 on {order}"


async def test_a_rejected_gated_tool_never_runs(env: Env) -> None:
    order = f"o-{uuid.uuid4().hex[:6]}"
    rid = await env.start("pay", {"order": order, "amount": 40})
    req = await env.request(rid)
    await env.app.approvals.reject(req.id, "duplicate refund", by="rita")
    assert await env.result(rid) == "sorry: duplicate refund"
    assert not [c for c in calls if c[0] == order]


async def test_an_escalation_is_resolved_with_a_value(env: Env) -> None:
    rid = await env.start("lookup", {"account_id": "acct-9"})
    esc = await env.escalation(rid)
    assert esc.id == f"{rid}:lookup_account#0"
    assert (esc.queue, esc.kind, esc.packet.tool) == ("accounts", "tool", "lookup_account")
    assert "503 from the accounts service" in esc.packet.reason
    assert [(j["key"], j["status"]) for j in esc.packet.journal] == [("lookup_account#0", "error")]
    [waiting] = [s for s in await env.app.steps(rid) if s.key == "lookup_account#0"]
    assert (waiting.status.value, waiting.fallback) == ("pending", "human")
    run = await env.app.get_run(rid)
    assert (run.status, run.waiting_on) == (keel.RunStatus.WAITING, [f"escalation:{esc.id}"])
    with pytest.raises(keel.InputError, match="is invalid"):
        await env.app.escalations.resolve(esc.id, result={"id": "acct-9"}, by="rita")
    done = await env.app.escalations.resolve(
        esc.id, result={"id": "acct-9", "tier": "pro"}, by="rita"
    )
    assert done.status == "resolved"
    assert await env.result(rid) == "acct-9:pro"
    [step] = [s for s in await env.app.steps(rid) if s.key == "lookup_account#0"]
    assert (step.status.value, step.fallback) == ("ok", "human")
    assert step.output == {"id": "acct-9", "tier": "pro"}
    await _replays(env, rid)
    assert (await env.app.escalations.get(esc.id)).resolved_by == "rita"


async def test_a_rejected_escalation_fails_the_step(env: Env) -> None:
    rid = await env.start("lookup", {"account_id": "acct-8"})
    esc = await env.escalation(rid)
    await env.app.escalations.reject(esc.id, "account closed", by="rita")
    out = await env.result(rid)
    assert out.startswith("gave up: escalation ")
    assert "was rejected by rita: account closed" in out


async def test_a_novel_input_waits_for_a_person_before_any_step(env: Env) -> None:
    """`novelty=`: the score is a durable operation, a novel input's review is in Keel's
    store with the engine's id, the run waits for it; a familiar input never asks."""
    near = await env.start("vet", {"text": "a refund please"})
    assert await env.result(near) == "handled: a refund please"
    assert [r for r in await env.app.approvals.list(status="all") if r.run_id == near] == []
    rid = await env.start("vet", {"text": "a cake recipe"})
    req = await env.request(rid)
    assert (req.id, req.kind, req.queue) == (f"{rid}:novelty:input#0", "novelty", "odd")
    assert (req.request["score"], req.request["threshold"]) == (1.0, 0.0)
    steps = {s.key: s.status.value for s in await env.app.steps(rid)}
    assert steps == {"novelty#0": "ok", "novelty:input#0": "pending"}
    run = await env.app.get_run(rid)
    assert (run.status, run.waiting_on) == (keel.RunStatus.WAITING, [f"review:{req.id}"])
    with pytest.raises(keel.InputError, match="only tool arguments can be edited"):
        await env.app.approvals.edit(req.id, {"text": "x"}, by="ada")
    await env.app.approvals.approve(req.id, by="ada")
    assert await env.result(rid) == "handled: a cake recipe"
    await _replays(env, rid)


async def test_an_own_operation_escalates_and_a_resolution_resumes_it(env: Env) -> None:
    """`Fallback.human` on a `ctx.operation(...)` effect: escalated as a tool's is (the
    packet, the pending entry), a resolution that does not fit its type refused."""
    rid = await env.start("consult", {"question": "meaning"})
    esc = await env.escalation(rid)
    assert esc.id == f"{rid}:oracle#0"
    assert "tool 'oracle' failed after 1 attempt(s)" in esc.packet.reason
    assert "503 from the oracle" in esc.packet.reason
    assert esc.packet.result_schema == {"type": "integer"}
    [waiting] = [s for s in await env.app.steps(rid) if s.key == "oracle#0"]
    assert (waiting.status.value, waiting.fallback) == ("pending", "human")
    with pytest.raises(keel.InputError, match="is invalid"):
        await env.app.escalations.resolve(esc.id, result="lots", by="rita")
    await env.app.escalations.resolve(esc.id, result=42, by="rita")
    assert await env.result(rid) == "the oracle says 42"
    [step] = [s for s in await env.app.steps(rid) if s.key == "oracle#0"]
    assert (step.status.value, step.fallback, step.output) == ("ok", "human", 42)
    await _replays(env, rid)


async def test_a_run_is_sampled_once_however_often_its_end_is_read(env: Env) -> None:
    """`sample=Sample(per_day=1)`: the end is recorded once, so the run is one candidate
    of the day however many reads learn of the end."""
    rid = await env.start("tally_daily", {"n": 3})
    assert await env.result(rid) == 6
    await env.app.get_run(rid)
    await env.app.list_runs()
    [sample] = await env.app.reviews.list(workflow="tally_daily")
    assert (sample.id, sample.run_id, sample.request["slot"]) == (f"{rid}:sample", rid, 0)
    day = sample.request["day"]
    assert await env.app.store.count_sample("tally_daily", day) == 2  # this probe is the 2nd


async def test_an_approval_times_out_in_virtual_time(env: Env) -> None:
    """A two-day deadline with on_timeout="reject", on Temporal's time skipping: the
    timer fires, the request is expired in Keel's store, the workflow gets the rejection."""
    from temporalio.testing import TimeSkipper

    skipping = TimeSkipper(env.client).client
    rid = f"late-{uuid.uuid4().hex[:8]}"
    await start(
        env.app, skipping, env.backend, "ship", {"order": "o-3", "timeout": 2 * 86400}, run_id=rid
    )
    out = await env.result(rid)
    assert out.startswith("not shipped: approval ")
    assert "got no decision before its deadline (queue shipping); timeout policy: reject" in out
    req = await env.app.approvals.get(f"{rid}:approval:ship#0")
    assert (req.status, req.decided_by) == ("expired", "keel")
    [step] = [s for s in await env.app.steps(rid) if s.key == "approval:ship#0"]
    assert step.status.value == "error" and step.error is not None
    assert step.error.type == "ApprovalRejected"


async def test_an_escalating_timeout_moves_the_request_then_fails_the_run(env: Env) -> None:
    """on_timeout=Escalate(...): after a day the request moves to the managers' queue
    with a new deadline; when that passes too, the run fails (then="fail")."""
    from temporalio.testing import TimeSkipper

    skipping = TimeSkipper(env.client).client
    rid = f"hand-{uuid.uuid4().hex[:8]}"
    await start(env.app, skipping, env.backend, "hand_over", {"order": "o-5"}, run_id=rid)
    with pytest.raises(keel.RunFailed) as caught:
        await env.result(rid)
    assert caught.value.error is not None
    assert caught.value.error.type == "ApprovalTimedOut"
    assert "timeout policy: fail" in caught.value.error.message
    req = await env.app.approvals.get(f"{rid}:approval:hand over o-5#0")
    assert (req.queue, req.status) == ("managers", "expired")
    moved = [a for a in await env.app.approvals.audit(req.id) if a["action"] == "escalated"]
    assert moved and moved[0]["detail"]["queue"] == "managers"


async def test_a_decision_through_the_console_api_reaches_the_workflow(env: Env) -> None:
    from keel.server.app import create_app
    from keel.server.auth import add_user

    token = await add_user(env.app.store, "rita", "reviewer", ["payments"])
    auth = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=create_app(env.app), client=("10.0.0.1", 5000))
    order = f"o-{uuid.uuid4().hex[:6]}"
    rid = await env.start("pay", {"order": order, "amount": 40})
    req = await env.request(rid)
    path = f"/api/v1/approvals/{req.id}".replace("#", "%23")
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as http:
        bad = await http.post(f"{path}/edit", headers=auth, json={"args": {"amount": "x"}})
        assert bad.status_code == 422, bad.text
        ok = await http.post(
            f"{path}/edit",
            headers=auth,
            json={"args": {"order": order, "amount": 30}, "note": "partial"},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["status"] == "edited"
        twice = await http.post(f"{path}/approve", headers=auth, json={})
        assert twice.status_code == 409, twice.text
    assert await env.result(rid) == f"refunded 30 on {order}"


async def test_a_decider_without_the_backend_is_told_to_configure_it(
    env: Env, store_url: str
) -> None:
    from keel.hitl.delivery import executed_elsewhere

    rid = await env.start("ship", {"order": "o-4"})
    req = await env.request(rid)
    # keel.hitl knows Temporal's runs by their lease owner, without importing the backend
    assert executed_elsewhere(await env.app.get_run(rid)) == "Temporal"
    plain = keel.App(store_url)  # no backend: it cannot reach the run
    try:
        with pytest.raises(keel.ConfigError, match=r"runs on Temporal.*KEEL_BACKEND"):
            await plain.approvals.approve(req.id, by="ada")
    finally:
        await plain.close()
    assert (await env.app.approvals.get(req.id)).status == "pending"
    await env.app.approvals.approve(req.id, by="ada")
    assert (await env.result(rid)).startswith("shipped o-4: approved by ada")


async def _keel(env: Env, *args: str) -> tuple[int, str]:
    """`keel ARGS` in a process of its own (this one hosts the worker), with the App's
    store and `KEEL_BACKEND`, as a person at a terminal runs it."""
    import os
    import sys

    environ = {**os.environ, "KEEL_STORE": env.app.store_url, "KEEL_BACKEND": env.backend.url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keel", *args,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


async def test_the_cli_decides_runs_on_temporal(env: Env) -> None:
    """`keel approvals edit` refused (exit 2, one line, as on Keel's engine), then
    accepted; `keel escalations resolve` resumes a run waiting on a person."""
    order = f"o-{uuid.uuid4().hex[:6]}"
    rid = await env.start("pay", {"order": order, "amount": 40})
    req = await env.request(rid)
    bad = json.dumps({"order": order, "amount": 0})
    code, out = await _keel(env, "approvals", "edit", req.id, "--args", bad, "--by", "rita")
    assert code == 2, out
    assert out.startswith("error: edited arguments for refund are invalid"), out
    good = json.dumps({"order": order, "amount": 12})
    code, out = await _keel(env, "approvals", "edit", req.id, "--args", good, "--by", "rita")
    assert code == 0, out
    assert f"run {rid} resumes (on Temporal)" in out, out
    assert await env.result(rid) == f"refunded 12 on {order}"

    rid = await env.start("lookup", {"account_id": "acct-7"})
    esc = await env.escalation(rid)
    result_json = '{"id": "acct-7", "tier": "basic"}'
    code, out = await _keel(env, "escalations", "resolve", esc.id, "--result", result_json)
    assert code == 0, out
    assert await env.result(rid) == "acct-7:basic"
