"""Refunds behind a human approval: an irreversible tool that never runs unapproved.

    look up the charge -> refund (irreversible: WAITS for a person in queue "payments")

Small refunds go through on their own; anything over the limit waits in the
"payments" queue until a reviewer approves, rejects (with a reason) or edits the
amount and approves. The run holds no process while it waits. A decision left
too long escalates to "payments-leads".

    keel run examples/refunds.py:refund \\
        --input '{"charge_id": "ch_1042", "reason": "double charge"}'
    keel approvals                      # the pending request, with the proposed refund
    keel approvals edit ID --args '{"charge_id": "ch_1042", "amount": 40.0}'
    keel run examples/refunds.py:refund --id RUN_ID      # resumes and refunds 40.00
"""

import os
from pathlib import Path

from pydantic import BaseModel

import keel
from keel.hitl import Approval, Escalate

app = keel.App()

AUTO_APPROVE_LIMIT = 50.0  # refunds up to this amount need no person

CHARGES = {
    "ch_1042": {"customer": "Larkspur Analytics", "amount": 80.0, "currency": "EUR"},
    "ch_1043": {"customer": "Bluebird Bakery", "amount": 12.5, "currency": "EUR"},
}


class Charge(BaseModel):
    charge_id: str
    customer: str
    amount: float
    currency: str


class RefundReceipt(BaseModel):
    refund_id: str
    charge_id: str
    amount: float


def ledger() -> Path:
    return Path(os.environ.get("KEEL_EXAMPLE_OUTBOX") or ".keel/outbox") / "refunds.txt"


@app.tool()
async def find_charge(charge_id: str) -> Charge:
    data = CHARGES.get(charge_id)
    if data is None:
        raise ValueError(f"no charge {charge_id!r} (known: {', '.join(sorted(CHARGES))})")
    return Charge(charge_id=charge_id, **data)


def refunded(idempotency_key: str, charge_id: str, amount: float) -> RefundReceipt:
    """Reconcile an interrupted refund from the ledger (or say it never happened)."""
    path = ledger()
    for line in path.read_text().splitlines() if path.exists() else []:
        key, charge, value = line.split("\t")
        if key == idempotency_key:
            return RefundReceipt(refund_id=key, charge_id=charge, amount=float(value))
    raise keel.EffectNotApplied("no such refund in the ledger")


@app.tool(
    irreversible=True,
    reconcile=refunded,
    approval=Approval(
        queue="payments",
        timeout=24 * 3600,
        on_timeout=Escalate("payments-leads", timeout=24 * 3600),
        when=lambda charge_id, amount: amount > AUTO_APPROVE_LIMIT,
        reason=f"refunds over {AUTO_APPROVE_LIMIT:.0f} EUR need a person",
    ),
)
async def issue_refund(charge_id: str, amount: float) -> RefundReceipt:
    step = keel.current_step()
    key = step.idempotency_key if step else f"manual:{charge_id}"
    path = ledger()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(f"{key}\t{charge_id}\t{amount}\n")
    return RefundReceipt(refund_id=key, charge_id=charge_id, amount=amount)


@app.workflow()
async def refund(ctx: keel.Context, charge_id: str, reason: str) -> dict:
    charge = await ctx.call(find_charge, charge_id)
    try:
        receipt = await ctx.call(issue_refund, charge.charge_id, charge.amount)
    except keel.ApprovalRejected as exc:
        return {"charge_id": charge_id, "status": "rejected", "why": str(exc)}
    return {"charge_id": charge_id, "status": "refunded", "amount": receipt.amount,
            "currency": charge.currency, "reason": reason}
