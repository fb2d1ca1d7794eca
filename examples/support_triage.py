"""Support-ticket triage: sequential steps, then a human approval before an irreversible send.

    classify (ctx.llm.structured) -> look up account -> draft reply (ctx.llm.text)
        -> WAIT for "approval" -> send reply

Every step is journaled, so the run survives restarts; while it waits for the
reviewer it holds no process at all (status WAITING). Each model call is a
journaled step too, with its prompt, answer, tokens and cost. The email is sent
by an `irreversible` tool that uses the step's idempotency key, so even if the
step is ever re-executed the customer gets exactly one email.

Run it offline (the model is a rule-based ScriptedModel, see `_offline_model.py`):

    python examples/support_triage.py            # approve
    python examples/support_triage.py --reject   # reject: nothing is sent

or with a real model, unchanged: `KEEL_MODEL=openai/gpt-4o-mini OPENAI_API_KEY=...`.
Drive it with the CLI (see examples/README.md):

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

from pydantic import BaseModel, Field, ValidationError

import keel

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # make the sibling offline model importable however we are loaded
    sys.path.insert(0, str(_HERE))

from _offline_model import offline_model  # noqa: E402

# Model calls go through one gateway. Offline, the alias "fast" is a rule-based
# ScriptedModel priced like gpt-4o-mini; with KEEL_MODEL set (e.g. openai/gpt-4o-mini
# and OPENAI_API_KEY) every alias is that real model instead, and nothing else changes.
# The store comes from KEEL_STORE / keel.toml, default sqlite:///.keel/keel.db.
app = keel.App(
    llm=keel.llm.Gateway(models={"fast": offline_model("offline-triage")}, default="fast")
)

DESCRIPTION = "Triage one sample ticket, approve (or reject) it, print the outcome."

APPROVAL_TIMEOUT = 3 * 24 * 3600.0  # a reviewer has three days; then the run ends "expired"

# The classification's confidence, from the answer's token logprobs (see keel.llm.structured):
# below this the label is a guess, and a person in the "support-ops" queue confirms or
# corrects it before the run goes on (keel approvals).
MIN_CONFIDENCE = 0.4

# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------

Category = Literal["outage", "bug", "billing", "account_access", "feature_request", "general"]
Urgency = Literal["low", "normal", "high", "critical"]


class Classification(BaseModel):
    """What the model says about a ticket."""

    category: Category
    urgency: Urgency
    confidence: float = Field(ge=0, le=1, description="how sure the model is of the category")
    signals: list[str] = Field(default_factory=list, description="the phrases that decided it")


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
    contact_name: str | None = None  # who the reply greets ("" when the CRM has no name)
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
# Prompts and checks for the model calls (each ctx.llm call is a journaled step)
# --------------------------------------------------------------------------------------


def classify_prompt(ticket: Ticket) -> str:
    return f"""Classify this support ticket.

<ticket>
Subject: {ticket.subject}

{ticket.body}
</ticket>

Answer with JSON:
- category: one of outage, bug, billing, account_access, feature_request, general
- urgency: critical (only for outages and access problems), high (the customer is blocked
  or has a deadline), low (suggestions, no rush) or normal
- confidence: how sure you are of the category, from 0 to 1
- signals: the phrases in the ticket that decided it"""


def consistent_label(label: Classification) -> str | None:
    """A model can return a well-formed label that is still wrong: check the combination."""
    if label.urgency == "critical" and label.category not in ("outage", "account_access"):
        return (
            f"urgency 'critical' is reserved for outages and access problems, "
            f"not {label.category!r}"
        )
    return None


def draft_prompt(ticket: Ticket, label: Classification, account: Account) -> str:
    return f"""Write the reply to this support ticket, as our support agent.

Customer name: {account.contact_name or "(not on file)"}
Company: {account.name}
Account tier: {account.tier}
SLA: {account.sla_hours} hours
Category: {label.category}
Urgency: {label.urgency}

<ticket>
Subject: {ticket.subject}

{ticket.body}
</ticket>

- Greet the customer by first name ("Hi Jonas,"). If no name is on file, open with "Hi there,".
- Thank them for contacting us about the ticket's subject, then say what happens next for
  a {label.category} ticket.
- For pro and enterprise accounts promise an answer within the SLA; for free accounts say
  we will follow up as soon as we can.
- Sign off with "Best regards," and "The Support Team".
- Plain text only: no subject line, no placeholders."""


# --------------------------------------------------------------------------------------
# Tools: each ctx.call of one is a journaled step
# --------------------------------------------------------------------------------------


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
# find_sent what happened instead of sending blindly again. An irreversible tool
# normally waits for a person's approval of its arguments (keel approvals); here the
# workflow already asks the reviewer for a decision on the draft (the "approval"
# signal, with reject and edit), so the tool's own gate is turned off.
@app.tool(irreversible=True, reconcile=find_sent, approval=False)
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
    draft = (state.draft or "").strip()
    problems = []
    if len(draft) < 40:
        problems.append("the draft is too short to answer a ticket")
    if "{" in draft or "TODO" in draft:
        problems.append("the draft still contains a template placeholder")
    greeting = draft.splitlines()[0] if draft else ""
    if not state.contact_name:
        problems.append(
            "the draft does not greet the customer by name (the CRM has no contact name)"
        )
    elif state.contact_name.split()[0] not in greeting:
        problems.append(
            f"the draft does not greet the customer by name ({state.contact_name!r} is not "
            f"in {greeting!r})"
        )
    return problems


@app.workflow(
    state=TriageState,
    # Drift (docs/drift.md), observed on every run that ends: the class mix, the model's
    # confidence in the category, the reviewers' approval rate (their decision comes as a
    # signal: an outcome of "sent" was approved) and the model cost per ticket.
    monitors=[
        keel.drift.Distribution("category"),
        keel.drift.Confidence("category"),
        keel.drift.ApprovalRate(path="status", approved="sent"),
        keel.drift.Metric("cost_usd"),
    ],
)
async def triage(
    ctx: keel.Context, ticket: Ticket, approval_timeout: float = APPROVAL_TIMEOUT
) -> Outcome:
    # Structured output: parsed into Classification, checked by consistent_label (a failed
    # check is sent back to the model once, with the reason); below MIN_CONFIDENCE, as
    # computed from the answer's token logprobs, a person reviews the label first.
    label = await ctx.llm.structured(
        Classification,
        prompt=classify_prompt(ticket),
        validate=consistent_label,
        retries=1,
        min_confidence=MIN_CONFIDENCE,
        review_queue="support-ops",
        name="classify",
    )
    ctx.state.category = label.category
    ctx.state.urgency = label.urgency
    ctx.state.confidence = label.confidence  # the model's own estimate, shown to reviewers

    account = await ctx.call(lookup_account, ticket.account_id)
    ctx.state.account_name = account.name
    ctx.state.account_tier = account.tier
    ctx.state.contact_name = account.contact_name
    ctx.state.priority = priority_for(label, account)

    # A checkpoint at the end of the phase: a draft that fails it goes to a person
    # (queue "support-ops") instead of poisoning the approval step that follows.
    async with ctx.phase(
        "respond", check=draft_is_sendable, on_fail="escalate", queue="support-ops"
    ):
        body = await ctx.llm.text(draft_prompt(ticket, label, account), name="draft")
        draft = Draft(to=account.contact_email, subject=f"Re: {ticket.subject}", body=body.strip())
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
        info = await handle.settle(timeout=120)  # generous: the first run loads models
        print(f"run {info.id}: {info.status.value}, waiting on {info.waiting_on}")
        if "approval" not in info.waiting_on:  # it failed, or a person must fix the draft first
            if info.error is not None:
                print(f"  {info.error.type}: {info.error.message}")
            print(f"inspect it with: keel show {handle.id}   (and: keel escalations)")
            raise SystemExit(1 if info.status is keel.RunStatus.FAILED else 0)
        view = await review_view(handle.id)
        print(
            f"  {view['category']} / {view['urgency']} (confidence {view['confidence']}), "
            f"{view['account_name']} [{view['account_tier']}] -> {view['priority']}"
        )
        print("  draft:\n    " + view["draft"].replace("\n", "\n    "))

        decision = {"approved": not args.reject, "reviewer": args.reviewer}
        print(f"\nsignal approval {json.dumps(decision)}")
        await app.signal(handle.id, "approval", decision)
        outcome: Outcome = await handle.result(timeout=120)
    finally:
        await app.close()

    print(f"\noutcome: {outcome.model_dump_json(indent=2)}")
    if outcome.status == "sent":
        print(f"outbox: {outbox_file()} ({len(read_outbox())} message(s) in total)")
    print(f"inspect the journal with: keel show {handle.id}")
    return outcome


if __name__ == "__main__":
    asyncio.run(main())
