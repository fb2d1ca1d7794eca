"""Workflows that ask people (approvals, a gated tool, a `Fallback.human` escalation),
each with the decision a person takes through Keel, that both executors must run alike.

tests/test_temporal_people.py runs each on Keel's engine and on Temporal, decides it
the same way (`app.approvals` / `app.escalations`), and compares the outcomes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

import keel
from keel.hitl import Approval, Escalate
from keel.types import Escalation, ReviewRequest
from tests.limits import WAIT

calls: list[tuple[str, int]] = []  # (order, amount) of every refund that ran


class Label(BaseModel):
    """A ticket's category and priority."""

    category: Literal["billing", "outage", "general"]
    priority: int


class Profile(BaseModel):
    id: str
    tier: str


async def refund(order: str, amount: Annotated[int, Field(gt=0)]) -> str:
    calls.append((order, amount))
    return f"refunded {amount} on {order}"


async def transfer(account: str, amount: int) -> str:
    return f"moved {amount} to {account}"


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


async def lookup_strict(ctx: keel.Context, account_id: str) -> str:
    account = await ctx.call(lookup_account, account_id)
    return f"{account.id}:{account.tier}"


async def move(ctx: keel.Context, account: str, amount: int) -> str:
    return str(await ctx.call(transfer, account, amount))  # irreversible: gated by default


async def hand_over(ctx: keel.Context, order: str) -> str:
    later = Escalate("managers", 2 * 86400, then="fail")  # a day for the desk, two more
    d = await ctx.approval(f"hand over {order}", queue="desk", timeout=86400, on_timeout=later)
    return f"handed over by {d.by}"


async def triage(ctx: keel.Context, text: str) -> dict[str, Any]:
    label = await ctx.llm.structured(
        Label, f"Classify: {text}", min_confidence=0.8, review_queue="triage-review"
    )
    return label.model_dump()


def build(store: str, **options: Any) -> keel.App:
    """An App with the scenarios' tools and workflows, and a model whose structured
    outputs score 0.47 (below triage's 0.8: each goes to a person)."""
    from keel.llm import Gateway, Reply, ScriptedModel

    content = json.dumps({"category": "general", "priority": 3})
    guess = Reply(content=content, logprobs=[-0.4, -1.2, -0.9, -0.5])
    model = ScriptedModel(rules=[], default=guess)
    app = keel.App(store, llm=Gateway({"m": model}, retry=keel.Retry(attempts=1)), **options)
    app.tool(approval=Approval(queue="payments", reason="moves money"))(refund)
    app.tool(irreversible=True)(transfer)
    human = keel.Fallback.human(queue="accounts")
    app.tool(retry=keel.Retry(attempts=1), fallback=human)(lookup_account)
    for wf in (pay, ship, move, lookup, lookup_strict, hand_over, triage):
        app.workflow(wf)
    return app


async def pending(app: keel.App, run_id: str) -> ReviewRequest:
    """Run `run_id`'s pending request, once Keel's store lists it."""
    async with asyncio.timeout(WAIT):
        while True:
            found = [r for r in await app.approvals.list() if r.run_id == run_id]
            if found:
                return found[0]
            await asyncio.sleep(0.05)


async def escalated(app: keel.App, run_id: str) -> Escalation:
    """Run `run_id`'s open escalation, once Keel's store lists it."""
    async with asyncio.timeout(WAIT):
        while True:
            found = [e for e in await app.escalations.list() if e.run_id == run_id]
            if found:
                return found[0]
            await asyncio.sleep(0.05)


Decide = Callable[[keel.App, str], Awaitable[Any]]


async def _approve(app: keel.App, rid: str) -> Any:
    return await app.approvals.approve((await pending(app, rid)).id, by="ada", note="ok")


async def _reject(app: keel.App, rid: str) -> Any:
    return await app.approvals.reject((await pending(app, rid)).id, "not today", by="ada")


async def _edit(app: keel.App, rid: str) -> Any:
    req = await pending(app, rid)
    return await app.approvals.edit(req.id, {**(req.args or {}), "amount": 25}, by="rita")


async def _correct(app: keel.App, rid: str) -> Any:
    req = await pending(app, rid)
    return await app.approvals.correct(req.id, {"category": "billing", "priority": 1}, by="ada")


async def _resolve(app: keel.App, rid: str) -> Any:
    esc = await escalated(app, rid)
    return await app.escalations.resolve(esc.id, result={"id": "a-1", "tier": "pro"}, by="rita")


async def _refuse(app: keel.App, rid: str) -> Any:
    return await app.escalations.reject((await escalated(app, rid)).id, "closed", by="rita")


@dataclass(frozen=True)
class PeopleScenario:
    """A workflow, its input, what a person decides, and the outcome on both executors."""

    workflow: str
    input: dict[str, Any]
    decide: Decide
    expected: tuple[Any, ...]


PEOPLE_SCENARIOS: dict[str, PeopleScenario] = {
    "approval approved": PeopleScenario(
        "ship", {"order": "o-1"}, _approve, ("ok", "shipped o-1: approved by ada (ok)")
    ),
    "approval rejected": PeopleScenario(
        "ship",
        {"order": "o-1"},
        _reject,
        ("ok", "not shipped: action 'ship' was rejected by ada: not today"),
    ),
    "gated tool edited": PeopleScenario(
        "pay", {"order": "o-2", "amount": 40}, _edit, ("ok", "refunded 25 on o-2")
    ),
    "gated tool rejected": PeopleScenario(
        "pay", {"order": "o-2", "amount": 40}, _reject, ("ok", "sorry: not today")
    ),
    "irreversible tool approved": PeopleScenario(
        "move", {"account": "a-9", "amount": 10}, _approve, ("ok", "moved 10 to a-9")
    ),
    "low confidence corrected": PeopleScenario(
        "triage",
        {"text": "charged twice"},
        _correct,
        ("ok", {"category": "billing", "priority": 1}),
    ),
    "escalation resolved": PeopleScenario(
        "lookup", {"account_id": "a-1"}, _resolve, ("ok", "a-1:pro")
    ),
    "escalation rejected": PeopleScenario(
        "lookup_strict",
        {"account_id": "a-1"},
        _refuse,
        ("failed", "EscalationRejected", "lookup_account#0"),
    ),
}
