"""Approvals, gated tools, escalations and timeouts for runs on Temporal, decided through
Keel (`app.approvals`, `app.escalations`, the console's /api/v1), on a real dev server.

The request lands in Keel's store (so lists and the audit trail show it); the decision
reaches the workflow as the update `keel.decide`, whose validator refuses a decision
the run cannot take: the caller gets the refusal, and the run keeps waiting."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import pytest
from pydantic import BaseModel, Field

import keel
from keel.backends.temporal import Backend, connect, result, serve, start
from keel.hitl import Approval
from keel.types import Escalation, ReviewRequest
from tests.limits import WAIT


class Profile(BaseModel):
    id: str
    tier: str


_calls: list[tuple[str, int]] = []


async def refund(order: str, amount: Annotated[int, Field(gt=0)]) -> str:
    _calls.append((order, amount))
    return f"refunded {amount} on {order}"


async def lookup_account(account_id: str) -> Profile:
    raise RuntimeError("503 from the accounts service")


async def pay(ctx: keel.Context, order: str, amount: int) -> str:
    try:
        return str(await ctx.call(refund, order, amount))
    except keel.ApprovalRejected as exc:
        return f"sorry: {exc.reason}"  # type: ignore[attr-defined]


async def ship(ctx: keel.Context, order: str, timeout: float | None = None) -> str:
    try:
        d = await ctx.approval({"name": "ship", "order": order}, queue="shipping", timeout=timeout)
    except keel.ApprovalRejected as exc:
        return f"not shipped: {exc.message}"
    return f"shipped {order}: {d.status} by {d.by} ({d.note})"


async def lookup(ctx: keel.Context, account_id: str) -> str:
    try:
        account = await ctx.call(lookup_account, account_id)
    except keel.EscalationRejected as exc:
        return f"gave up: {exc.message}"
    return f"{account.id}:{account.tier}"


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
        """The run's pending request once Keel's store lists it."""
        async with asyncio.timeout(WAIT):
            while True:
                found = [r for r in await self.app.approvals.list() if r.run_id == rid]
                if found:
                    return found[0]
                await asyncio.sleep(0.05)

    async def escalation(self, rid: str) -> Escalation:
        async with asyncio.timeout(WAIT):
            while True:
                found = [e for e in await self.app.escalations.list() if e.run_id == rid]
                if found:
                    return found[0]
                await asyncio.sleep(0.05)


@pytest.fixture
async def env(temporal_address: str, store_url: str) -> AsyncIterator[Env]:
    backend = Backend(address=temporal_address, task_queue=f"p-{uuid.uuid4().hex[:12]}")
    app = keel.App(store_url, backend=backend)
    app.tool(approval=Approval(queue="payments", reason="moves money"))(refund)
    app.tool(retry=keel.Retry(attempts=1), fallback=keel.Fallback.human(queue="accounts"))(
        lookup_account
    )
    for wf in (pay, ship, lookup):
        app.workflow(wf)
    client = await connect(backend)
    async with serve(app, client, backend, max_cached_workflows=0):
        yield Env(app, client, backend)
    await app.close()


async def test_an_approval_is_listed_then_approved_through_keel(env: Env) -> None:
    rid = await env.start("ship", {"order": "o-1"})
    req = await env.request(rid)
    assert req.id == f"{rid}:approval:ship#0"  # the id Keel's engine gives it
    assert (req.kind, req.queue, req.status) == ("approval", "shipping", "pending")
    done = await env.app.approvals.approve(req.id, by="ada", note="packed")
    assert (done.status, done.decided_by) == ("approved", "ada")
    assert await env.result(rid) == "shipped o-1: approved by ada (packed)"
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
    assert not [c for c in _calls if c[0] == order]  # nothing ran before the decision
    await env.app.approvals.edit(req.id, {"order": order, "amount": 25}, by="rita")
    assert await env.result(rid) == f"refunded 25 on {order}"
    assert [c for c in _calls if c[0] == order] == [(order, 25)]


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
    assert not [c for c in _calls if c[0] == order]


async def test_an_escalation_is_resolved_with_a_value(env: Env) -> None:
    rid = await env.start("lookup", {"account_id": "acct-9"})
    esc = await env.escalation(rid)
    assert esc.id == f"{rid}:lookup_account#0"
    assert (esc.queue, esc.kind, esc.packet.tool) == ("accounts", "tool", "lookup_account")
    assert "503 from the accounts service" in esc.packet.reason
    with pytest.raises(keel.InputError, match="is invalid"):
        await env.app.escalations.resolve(esc.id, result={"id": "acct-9"}, by="rita")
    done = await env.app.escalations.resolve(
        esc.id, result={"id": "acct-9", "tier": "pro"}, by="rita"
    )
    assert done.status == "resolved"
    assert await env.result(rid) == "acct-9:pro"
    assert (await env.app.escalations.get(esc.id)).resolved_by == "rita"


async def test_a_rejected_escalation_fails_the_step(env: Env) -> None:
    rid = await env.start("lookup", {"account_id": "acct-8"})
    esc = await env.escalation(rid)
    await env.app.escalations.reject(esc.id, "account closed", by="rita")
    out = await env.result(rid)
    assert out.startswith("gave up: escalation ")
    assert "was rejected by rita: account closed" in out


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
    from keel.backends.temporal.mirror import OWNER
    from keel.hitl.delivery import _ELSEWHERE

    assert OWNER in _ELSEWHERE  # keel.hitl names Temporal's lease owner without importing it
    rid = await env.start("ship", {"order": "o-4"})
    req = await env.request(rid)
    plain = keel.App(store_url)  # no backend: it cannot reach the run
    try:
        with pytest.raises(keel.ConfigError, match=r"runs on temporal.*KEEL_BACKEND"):
            await plain.approvals.approve(req.id, by="ada")
    finally:
        await plain.close()
    assert (await env.app.approvals.get(req.id)).status == "pending"
    await env.app.approvals.approve(req.id, by="ada")
    assert (await env.result(rid)).startswith("shipped o-4: approved by ada")
