"""Support-ticket triage: sequential steps, then a human approval before an irreversible send.

    classify ticket -> look up account -> draft reply -> WAIT for "approval" -> send reply

Every step is journaled, so the run survives restarts; while it waits for the
reviewer it holds no process at all (status WAITING). The email is sent by an
`irreversible` tool that uses the step's idempotency key, so even if the step is
ever re-executed the customer gets exactly one email.

Run it offline (the model is a rule-based stand-in, see `_offline_model.py`):

    python examples/support_triage.py            # approve
    python examples/support_triage.py --reject   # reject: nothing is sent

or drive it with the CLI (see examples/README.md):

    keel run examples/support_triage.py:triage --id T-1042 \\
        --input '{"ticket": {"id": "T-1042", "account_id": "acct_1003",
                  "subject": "Charged twice", "body": "Please refund the duplicate charge."}}'
    keel signal T-1042 approval --payload '{"approved": true, "reviewer": "dana"}'
"""

import argparse
import asyncio
import fcntl
import hashlib
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

import keel

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # make the sibling stand-in importable however we are loaded
    sys.path.insert(0, str(_HERE))

from _offline_model import Classification, model_classify, model_draft_reply  # noqa: E402

app = keel.App()  # store from KEEL_STORE / keel.toml, default sqlite:///.keel/keel.db

DESCRIPTION = "Triage one sample ticket, approve (or reject) it, print the outcome."

APPROVAL_TIMEOUT = 3 * 24 * 3600.0  # a reviewer has three days; then the run ends "expired"

# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


class Ticket(BaseModel):
    id: str
    account_id: str
    subject: str
    body: str


class Account(BaseModel):
    id: str
    name: str
    tier: Literal["free", "pro", "enterprise"]
    contact_name: str
    contact_email: str
    sla_hours: int


class Draft(BaseModel):
    to: str
    subject: str
    body: str


class Decision(BaseModel):
    """The payload of the "approval" signal a reviewer sends."""

    approved: bool
    reviewer: str
    edited_body: str | None = None


class Receipt(BaseModel):
    message_id: str
    idempotency_key: str
    to: str
    sent_at: str
    duplicate: bool = False  # True when the outbox already had this key: nothing was re-sent


class TriageState(BaseModel):
    """What the run knows so far; a reviewer sees this alongside the draft."""

    status: Literal["new", "awaiting_approval", "sent", "rejected", "expired"] = "new"
    category: str | None = None
    urgency: str | None = None
    confidence: float | None = None
    account_name: str | None = None
    account_tier: str | None = None
    priority: Literal["P1", "P2", "P3", "P4"] | None = None
    draft: str | None = None
    reviewer: str | None = None


class Outcome(BaseModel):
    ticket_id: str
    status: Literal["sent", "rejected", "expired"]
    category: str
    priority: str
    account_tier: str
    reviewer: str | None = None
    edited: bool = False
    message_id: str | None = None
    body: str | None = None


class UnknownAccountError(LookupError):
    """The ticket names an account the CRM does not have."""


class InvalidDecision(ValueError):
    """The "approval" signal's payload is not a decision."""


# A small fake CRM, keyed by account id.
CRM: dict[str, Account] = {
    a.id: a
    for a in [
        Account(
            id="acct_1001",
            name="Northwind Traders",
            tier="enterprise",
            contact_name="Priya Raman",
            contact_email="priya@northwind.example",
            sla_hours=4,
        ),
        Account(
            id="acct_1002",
            name="Bluebird Bakery",
            tier="free",
            contact_name="Sam Ortiz",
            contact_email="sam@bluebird.example",
            sla_hours=72,
        ),
        Account(
            id="acct_1003",
            name="Larkspur Analytics",
            tier="pro",
            contact_name="Jonas Weber",
            contact_email="jonas@larkspur.example",
            sla_hours=24,
        ),
        Account(
            id="acct_1005",
            name="Quayside Books",
            tier="pro",
            contact_name="",  # the CRM record has no contact name: the draft can't greet
            contact_email="orders@quayside.example",
            sla_hours=24,
        ),
        Account(
            id="acct_1004",
            name="Fernhill Clinic",
            tier="enterprise",
            contact_name="Amara Okafor",
            contact_email="it@fernhill.example",
            sla_hours=4,
        ),
    ]
}

SAMPLE_TICKETS: list[Ticket] = [
    Ticket(
        id="T-1042",
        account_id="acct_1003",
        subject="Charged twice for the March invoice",
        body=(
            "Hi, our credit card was charged twice for the March subscription invoice "
            "(INV-2291). Please refund the duplicate charge - finance closes the books today."
        ),
    ),
    Ticket(
        id="T-1043",
        account_id="acct_1001",
        subject="Dashboard is down for all users",
        body="Since 09:10 UTC the dashboard returns 503 for all users. This is an outage.",
    ),
    Ticket(
        id="T-1045",
        account_id="acct_1005",
        subject="Order arrived damaged",
        body="Two of the books in order 7781 arrived with torn covers. Can you replace them?",
    ),
    Ticket(
        id="T-1044",
        account_id="acct_1002",
        subject="Idea: export to CSV",
        body="Would be nice to export orders to CSV. No rush, just a suggestion!",
    ),
]


def priority_for(label: Classification, account: Account) -> Literal["P1", "P2", "P3", "P4"]:
    """Urgency sets the base priority; enterprise accounts move up one level."""
    base = {"critical": 1, "high": 2, "normal": 3, "low": 4}[label.urgency]
    if account.tier == "enterprise" and base > 1:
        base -= 1
    return ("P1", "P2", "P3", "P4")[base - 1]


# --------------------------------------------------------------------------------------
# Tools: each ctx.call of one is a journaled step
# --------------------------------------------------------------------------------------


def consistent_label(label: Classification) -> str | None:
    """A model can return a well-formed label that is still wrong: check the combination."""
    if label.urgency == "critical" and label.category not in ("outage", "account_access"):
        return (
            f"urgency 'critical' is reserved for outages and access problems, "
            f"not {label.category!r}"
        )
    return None


# An inconsistent label is retried once, with the validation messages handed to the
# next attempt (keel.current_step().feedback) - what an LLM prompt would include.
@app.tool(validate=[Classification, consistent_label], retry=keel.Retry(attempts=2))
async def classify_ticket(ticket: Ticket) -> Classification:
    return model_classify(f"{ticket.subject}\n\n{ticket.body}")


class CRMUnavailable(Exception):
    """What the CRM client raises on HTTP 503; Keel retries 5xx by default."""

    status_code = 503


def crm_outage(account_id: str) -> bool:
    """KEEL_EXAMPLE_FLAKY_CRM=1 makes the CRM fail the first call for each account."""
    if os.environ.get("KEEL_EXAMPLE_FLAKY_CRM") != "1":
        return False
    step = keel.current_step()
    return step is not None and step.attempt == 1


# Transient CRM errors retry with backoff; an unknown account is not transient, so it
# goes straight to the declared fallback: a hard stop with a structured error.
@app.tool(
    retry=keel.Retry(attempts=4, backoff=0.2, max_backoff=2.0),
    fallback=keel.Fallback.fail(),
)
async def lookup_account(account_id: str) -> Account:
    if crm_outage(account_id):
        raise CRMUnavailable(f"CRM returned 503 for {account_id}")
    account = CRM.get(account_id)
    if account is None:
        raise UnknownAccountError(
            f"no account {account_id!r} in the CRM (known: {', '.join(sorted(CRM))}); "
            "fix the ticket's account_id and start a new run"
        )
    return account


@app.tool()
async def draft_reply(ticket: Ticket, label: Classification, account: Account) -> Draft:
    text = model_draft_reply(
        subject=ticket.subject,
        customer_name=account.contact_name,
        category=label.category,
        tier=account.tier,
        sla_hours=account.sla_hours,
    )
    return Draft(to=account.contact_email, subject=text.subject, body=text.body)


def find_sent(idempotency_key: str, ticket_id: str, to: str, subject: str, body: str) -> Receipt:
    """Reconcile an interrupted send: the outbox's receipt, or "never sent" (safe to send)."""
    for entry in read_outbox():
        if entry.get("idempotency_key") == idempotency_key:
            return Receipt(
                message_id=entry["message_id"],
                idempotency_key=idempotency_key,
                to=entry["to"],
                sent_at=entry["sent_at"],
            )
    raise keel.EffectNotApplied(f"no email with idempotency key {idempotency_key} in the outbox")


# irreversible: Keel records the intent first; if a worker dies mid-send, it asks
# find_sent what happened instead of sending blindly again.
@app.tool(irreversible=True, reconcile=find_sent)
async def send_reply(ticket_id: str, to: str, subject: str, body: str) -> Receipt:
    """Send the email (append it to the local outbox), at most once per idempotency key."""
    step = keel.current_step()
    if step is None:
        raise RuntimeError(
            "send_reply needs an idempotency key: call it as a step, "
            "`await ctx.call(send_reply, ...)`, not directly"
        )
    message = {"ticket_id": ticket_id, "to": to, "subject": subject, "body": body}
    return deliver(step.idempotency_key, message)


# --------------------------------------------------------------------------------------
# The outbox: a stand-in email provider that honours idempotency keys
# --------------------------------------------------------------------------------------


def outbox_file() -> Path:
    """`.keel/outbox/sent.jsonl`, or under $KEEL_EXAMPLE_OUTBOX."""
    return Path(os.environ.get("KEEL_EXAMPLE_OUTBOX") or ".keel/outbox") / "sent.jsonl"


def read_outbox() -> list[dict[str, Any]]:
    path = outbox_file()
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def deliver(idempotency_key: str, message: dict[str, Any]) -> Receipt:
    """Record `message` as sent unless this key was already sent; never sends twice."""
    path = outbox_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # other workers wait here; released on close
        f.seek(0)
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a torn line from a crash mid-write: never sent
                continue
            if entry.get("idempotency_key") == idempotency_key:
                return Receipt(
                    message_id=entry["message_id"],
                    idempotency_key=idempotency_key,
                    to=entry["to"],
                    sent_at=entry["sent_at"],
                    duplicate=True,
                )
        entry = {
            "idempotency_key": idempotency_key,
            "message_id": "msg_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16],
            "sent_at": datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="seconds"),
            **message,
        }
        f.seek(0, os.SEEK_END)
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return Receipt(
        message_id=entry["message_id"],
        idempotency_key=idempotency_key,
        to=entry["to"],
        sent_at=entry["sent_at"],
    )


# --------------------------------------------------------------------------------------
# The workflow
# --------------------------------------------------------------------------------------


def draft_is_sendable(state: TriageState) -> list[str]:
    """Checkpoint of the respond phase: the state a reviewer would be asked to approve."""
    problems = []
    if len(state.draft.strip()) < 40:
        problems.append("the draft is too short to answer a ticket")
    if "{" in state.draft or "TODO" in state.draft:
        problems.append("the draft still contains a template placeholder")
    if state.draft.startswith("Hi there"):
        problems.append("the draft does not greet the customer by name (no CRM contact)")
    return problems


@app.workflow(state=TriageState)
async def triage(
    ctx: keel.Context, ticket: Ticket, approval_timeout: float = APPROVAL_TIMEOUT
) -> Outcome:
    label = await ctx.call(classify_ticket, ticket)
    ctx.state.category = label.category
    ctx.state.urgency = label.urgency
    ctx.state.confidence = label.confidence

    account = await ctx.call(lookup_account, ticket.account_id)
    ctx.state.account_name = account.name
    ctx.state.account_tier = account.tier
    ctx.state.priority = priority_for(label, account)

    # A checkpoint at the end of the phase: a draft that fails it goes to a person
    # (queue "support-ops") instead of poisoning the approval step that follows.
    async with ctx.phase(
        "respond", check=draft_is_sendable, on_fail="escalate", queue="support-ops"
    ):
        draft = await ctx.call(draft_reply, ticket, label, account)
        ctx.state.draft = draft.body
    ctx.state.status = "awaiting_approval"

    def outcome(status: Literal["sent", "rejected", "expired"], **extra: Any) -> Outcome:
        return Outcome(
            ticket_id=ticket.id,
            status=status,
            category=label.category,
            priority=ctx.state.priority,
            account_tier=account.tier,
            **extra,
        )

    # The run suspends here (WAITING, no process held) until a reviewer decides.
    try:
        payload = await ctx.wait_for("approval", timeout=approval_timeout)
    except keel.SignalTimeout:
        ctx.state.status = "expired"
        return outcome("expired")
    try:
        decision = Decision.model_validate(payload)
    except ValidationError as exc:
        raise InvalidDecision(
            f"the 'approval' payload {payload!r} is not a decision ({exc.error_count()} "
            'problem(s)); send {"approved": true|false, "reviewer": "name", '
            '"edited_body": optional}'
        ) from None
    ctx.state.reviewer = decision.reviewer

    if not decision.approved:
        ctx.state.status = "rejected"
        return outcome("rejected", reviewer=decision.reviewer)

    body = decision.edited_body or ctx.state.draft  # a reviewer may have fixed the draft
    receipt = await ctx.call(send_reply, ticket.id, draft.to, draft.subject, body)
    ctx.state.status = "sent"
    return outcome(
        "sent",
        reviewer=decision.reviewer,
        edited=decision.edited_body is not None,
        message_id=receipt.message_id,
        body=body,
    )


# --------------------------------------------------------------------------------------
# Demo
# --------------------------------------------------------------------------------------


async def review_view(run_id: str) -> dict[str, Any]:
    """What a reviewer sees for a waiting run: its typed state so far."""
    return (await app.get_run(run_id)).state or {}


async def main(argv: list[str] | None = None) -> Outcome:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--ticket", default="T-1042", choices=[t.id for t in SAMPLE_TICKETS])
    parser.add_argument("--reject", action="store_true", help="the reviewer rejects the draft")
    parser.add_argument("--reviewer", default="dana@support")
    args = parser.parse_args(argv)
    ticket = next(t for t in SAMPLE_TICKETS if t.id == args.ticket)

    try:
        handle = await app.start(triage, {"ticket": ticket})
        info = await handle.settle(timeout=30)
        print(f"run {info.id}: {info.status.value}, waiting on {info.waiting_on}")
        view = await review_view(handle.id)
        print(
            f"  {view['category']} / {view['urgency']} (confidence {view['confidence']}), "
            f"{view['account_name']} [{view['account_tier']}] -> {view['priority']}"
        )
        print("  draft:\n    " + view["draft"].replace("\n", "\n    "))

        decision = {"approved": not args.reject, "reviewer": args.reviewer}
        print(f"\nsignal approval {json.dumps(decision)}")
        await app.signal(handle.id, "approval", decision)
        outcome: Outcome = await handle.result(timeout=30)
    finally:
        await app.close()

    print(f"\noutcome: {outcome.model_dump_json(indent=2)}")
    if outcome.status == "sent":
        print(f"outbox: {outbox_file()} ({len(read_outbox())} message(s) in total)")
    print(f"inspect the journal with: keel show {handle.id}")
    return outcome


if __name__ == "__main__":
    asyncio.run(main())
