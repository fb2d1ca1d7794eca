"""Workflows for the web review console's browser tests (tests/test_console_browser.py).

Subprocesses load it by path (`keel worker tests/apps/console_app.py`, `keel serve
tests/apps/console_app.py`), which finds the module-level `app` (store from $KEEL_STORE);
the test process calls `build(store_url)` for an App of its own on the same store, to
start runs and read them.

- `refund_order`: looks the order up, asks the offline model for a one-line summary, then
  calls `refund` (irreversible; waits for a person in queue "payments"; its `amount` must
  be 1..500, so a reviewer's edit to 9999 is refused). A rejection fails the run.
- `draft_reply`: the offline model drafts a customer reply that carries an XSS payload;
  `send_reply` (queue "support") shows it as an argument and, through the policy's
  context, as the draft in the run's state. The console must render it inert.
- `label`: answers at once; every completed run is sampled into queue "qa".
- `ping`: no approval, no model: proves a worker runs this module.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

import keel
from keel.hitl import Approval, Sample
from keel.llm import Reply, ScriptedModel

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
INPUT_XSS = '<svg onload="window.__xss=3"></svg>'  # in a run's input: shown as #incoming


def script(messages: list[dict[str, Any]]) -> Reply:
    prompt = str(messages[-1].get("content") or "")
    if prompt.startswith("Draft"):
        return Reply(content=f"Hello! {XSS} Your refund is on its way.")
    return Reply(content="Refund looks consistent with the order history.")


class DraftState(BaseModel):
    ticket: str = ""
    draft: str = ""


def build(store: str | None = None) -> keel.App:
    model = ScriptedModel(script, name="console-model", price_as="gpt-4o-mini")
    app = keel.App(store, llm=model)

    @app.tool()
    async def find_order(order: str) -> dict[str, Any]:
        return {"order": order, "customer": "Larkspur Analytics", "paid": 480}

    @app.tool(
        irreversible=True,
        approval=Approval(queue="payments", reason="refunds move money: a person approves"),
    )
    async def refund(
        order: str, amount: Annotated[int, Field(gt=0, le=500)], reason: str = ""
    ) -> str:
        return f"refunded {amount} on {order}" + (f" ({reason})" if reason else "")

    @app.workflow()
    async def refund_order(
        ctx: keel.Context, order: str, amount: int, reason: str = ""
    ) -> dict[str, Any]:
        found = await ctx.call(find_order, order)
        summary = await ctx.llm.text(f"Summarise a refund of {amount} on {order}", name="summary")
        receipt = await ctx.call(refund, order, amount, reason)
        return {"receipt": receipt, "customer": found["customer"], "summary": summary}

    @app.tool(
        irreversible=True,
        approval=Approval(
            queue="support",
            reason="a model wrote this reply: a person reads it before it is sent",
            context=lambda state: {"ticket": state.ticket, "draft": state.draft},
        ),
    )
    async def send_reply(ticket: str, body: str) -> str:
        return f"sent {len(body)} characters on {ticket}"

    @app.workflow(state=DraftState)
    async def draft_reply(ctx: keel.Context, ticket: str) -> str:
        ctx.state.ticket = ticket
        draft = await ctx.llm.text(f"Draft a reply to: {ticket}", name="draft")
        ctx.state.draft = draft
        sent: str = await ctx.call(send_reply, ticket, draft)
        return sent

    @app.workflow(sample=Sample(rate=1.0, queue="qa"))
    async def label(ctx: keel.Context, text: str) -> str:
        return "billing" if "refund" in text else "general"

    @app.workflow()
    async def ping(ctx: keel.Context, n: int = 1) -> int:
        return n + 1

    return app


app = build()
