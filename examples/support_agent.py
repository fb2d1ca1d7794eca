"""A support agent with tiered memory: a lean context window, session state outside it,
long-term memory pulled in only when relevant (docs/memory.md).

    a conversation = a session ("chat-1042-<tag>-1"); each customer message = one run:
        session fields (ctx.session) ─┐
        long-term hits above 0.25    ─┼─> ctx.llm.agent(budget=BUDGET, tools=[lookup_order,
        earlier turns (history)      ─┘                  reship_order]) -> the reply
        last message: ctx.memory.extract(transcript) -> a background run learns new facts

- **Session state**: what this conversation has established (the customer's name, the
  order, the open issue) lives in `ctx.session`, read field by field into each prompt as
  `Block.fields("session", ...)`; "send a replacement" needs no order number because the
  session has it.
- **Long-term memory**: what earlier conversations taught us about the customer
  (namespace `customer:<id>`), searched with the customer's message and injected as
  `Block.facts(...)` only above `MIN_RELEVANCE`: a question about opening hours gets none.
- **Working memory**: every model call fits `BUDGET` tokens; `lookup_order` returns a
  ~3,000-token carrier record cut to five fields by `@app.tool(keep=OrderStatus)` (the
  full record is journaled out of line). `keel show RUN` prints each call's context
  (`context 371/400 tok`) and the cut (`kept 5 of 11 fields`).
- **Learning**: the conversation's last run calls `ctx.memory.extract(transcript, ...)`,
  which starts an extraction run of its own (the conversation never waits for it); each
  fact it finds gets a status (added, duplicate, ...). The next conversation finds them.

Run it offline (the model is the rule-based ScriptedModel in `_offline_model.py`, the
embeddings the local MiniLM):

    python examples/support_agent.py

or with a real model, unchanged: `KEEL_MODEL=openai/gpt-4o-mini OPENAI_API_KEY=...`.
With the CLI, a conversation is a session and each message a run:

    keel run examples/support_agent.py:seed_customer --id seed-1042 \\
        --input '{"customer_id": "1042"}'
    keel run examples/support_agent.py:support_turn --session chat-7 \\
        --input '{"customer_id": "1042", "message": "My order A-7781 has not arrived yet"}'
    keel run examples/support_agent.py:support_turn --session chat-7 --input '{"customer_id":
        "1042", "end": true, "message": "From now on please deliver my parcels to my office"}'
    keel worker examples/support_agent.py      # runs the extraction the last message started
    keel memory search "where do parcels go" -n customer:1042 --min-relevance 0.25
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

import keel
from keel.memory import Block

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # make the sibling offline model importable however we are loaded
    sys.path.insert(0, str(_HERE))

from _offline_model import SUPPORT_AGENT, offline_model  # noqa: E402

# Offline, the alias "fast" is a rule-based ScriptedModel priced like gpt-4o-mini; with
# KEEL_MODEL set every alias is that real model. The extraction runs use it too.
app = keel.App(
    llm=keel.llm.Gateway(models={"fast": offline_model("offline-support")}, default="fast")
)

DESCRIPTION = "Two conversations with one customer: the second finds what the first taught."

# Relevance is calibrated (docs/memory.md): with MiniLM, 0.5 is a cosine of ~0.48, which a
# question and its answer reach but a customer's message and a fact that bears on it
# rarely do (these score 0.3-0.45; the others under 0.15, an unrelated question ~0.01).
# A missed fact costs a worse answer, an extra one a line the model is told to ignore
# when it does not matter: so a lower bar than the default 0.5.
MIN_RELEVANCE = 0.25
BUDGET = 400  # tokens per model call: system, session, facts, history, task and tools
SESSION_FIELDS = ("customer_name", "order_id", "open_issue")

# --------------------------------------------------------------------------------------
# Data: the CRM, the orders, what earlier conversations taught (seeded once)
# --------------------------------------------------------------------------------------

CUSTOMERS = {
    "1042": {"name": "Maya Patel", "email": "maya.patel@example.com", "tier": "premium"},
    "1043": {"name": "Tom Okafor", "email": "tom.okafor@example.com", "tier": "standard"},
}
KNOWN_FACTS = {
    "1042": [
        "Maya Patel prefers to be contacted by email, never by phone",
        "Maya Patel is a premium member: express shipping is free on all her orders",
        "Maya Patel is allergic to latex: no latex packaging or balloons in gift orders",
        "Maya Patel's earlier order A-6120 never arrived and had to be replaced",
    ],
    "1043": ["Tom Okafor prefers phone calls in the afternoon"],
}


class OrderStatus(BaseModel):
    """The fields of a carrier record the agent needs (the rest stays out of its context)."""

    id: str
    status: str
    carrier: str
    last_scan: str
    items: list[str]


def carrier_record(order_id: str) -> dict[str, Any]:
    """A carrier's full tracking record: eleven fields, ~3,000 tokens of scan history."""
    scans = [
        {
            "at": f"2026-11-{1 + i // 3:02d}T{8 + i % 3 * 4:02d}:15:00Z",
            "facility": f"Parcelink sort centre {['Leeds', 'Wakefield', 'Bradford'][i % 3]}",
            "event": "scanned on conveyor, routed to outbound trailer",
            "operator": f"op-{4100 + i}",
            "raw": "EDI 214 AT7*X6*NS***20261101*0815*LT~MS1*LEEDS*WY*GB~" * 2,
        }
        for i in range(24)
    ]
    return {
        "id": order_id,
        "status": "lost in transit",
        "carrier": "Parcelink",
        "last_scan": "2026-11-28 Leeds hub, no scan since",
        "items": ["Trail running shoes (W, 39)"],
        "customer_id": "1042",
        "weight_kg": 1.2,
        "scans": scans,
        "customs": {"declared": False, "notes": "domestic shipment " * 10},
        "billing": {"service": "standard", "charged": 0.0, "ledger": ["posted"] * 12},
        "audit": [f"record {n} synchronised from carrier feed" for n in range(30)],
    }


ORDERS = {"A-7781": "1042", "A-7790": "1043"}

# --------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------


class UnknownOrderError(LookupError):
    """The agent asked for an order the carrier does not have."""


@app.tool
async def customer_profile(customer_id: str) -> dict[str, str]:
    """The CRM's record of a customer."""
    if customer_id not in CUSTOMERS:
        raise LookupError(f"no customer {customer_id!r}; known: {', '.join(CUSTOMERS)}")
    return CUSTOMERS[customer_id]


@app.tool(keep=OrderStatus)
async def lookup_order(order_id: str) -> dict[str, Any]:
    """Where an order is: its status, carrier, last scan and items."""
    if order_id not in ORDERS:
        raise UnknownOrderError(f"no order {order_id!r}; known: {', '.join(ORDERS)}")
    return carrier_record(order_id)


@app.tool
async def reship_order(order_id: str, express: bool = False) -> dict[str, str]:
    """Send a replacement for an order; express when the customer's plan includes it."""
    if order_id not in ORDERS:
        raise UnknownOrderError(f"no order {order_id!r}; known: {', '.join(ORDERS)}")
    service = "express" if express else "standard"
    return {
        "replacement": f"R-{order_id[2:]}-1",
        "service": service,
        "tracking": f"PL{order_id[2:]}{'EX' if express else 'ST'}",
        "ships": "today",
    }


# --------------------------------------------------------------------------------------
# Workflows
# --------------------------------------------------------------------------------------


class Hit(BaseModel):
    text: str
    score: float


class TurnReply(BaseModel):
    """One message answered: the reply, and what each memory tier contributed."""

    session: str
    reply: str
    fields: dict[str, Any]  # the session fields the prompt had
    memory: list[Hit]  # long-term hits above MIN_RELEVANCE (none: no block at all)
    tools: list[str]
    extraction: str | None = None  # the extraction run's id, on a conversation's last message


def namespace(customer_id: str) -> str:
    """Where a customer's long-term memories live."""
    return f"customer:{customer_id}"


@app.workflow
async def seed_customer(ctx: keel.Context, customer_id: str) -> list[str]:
    """What earlier conversations taught about a customer. Start it with a fixed id
    (`seed-<customer>`): a second start replays this run, so nothing is added twice."""
    if customer_id not in KNOWN_FACTS:
        raise LookupError(f"no customer {customer_id!r}; known: {', '.join(KNOWN_FACTS)}")
    ids: list[str] = await ctx.memory.add_many(
        KNOWN_FACTS[customer_id], namespace=namespace(customer_id)
    )
    return ids


@app.workflow
async def support_turn(
    ctx: keel.Context, customer_id: str, message: str, end: bool = False
) -> TurnReply:
    """Answer one customer message of a conversation (the run's session)."""
    s = ctx.session
    name = await s.get("customer_name")
    fields: dict[str, Any] = {"customer_name": name}
    turns: list[dict[str, str]] = []
    if name is None:  # the conversation's first message: nothing established yet
        fields["customer_name"] = name = (await ctx.call(customer_profile, customer_id))["name"]
        await s.set("customer_name", name)
    else:  # the other fields, one by one
        fields |= {k: v for k in SESSION_FIELDS[1:] if (v := await s.get(k)) is not None}
        turns = await s.get("transcript", [])

    hits = await ctx.memory.search(
        message, namespace=namespace(customer_id), k=3, min_relevance=MIN_RELEVANCE
    )
    blocks = [Block("conversation", _chat(turns), kind="history")] if turns else []
    blocks.append(Block.fields("session", fields))
    if hits:  # nothing relevant: no block, not an empty one
        blocks.append(Block.facts("memory", hits))
    done = await ctx.llm.agent(
        message,
        tools=[lookup_order, reship_order],
        system=SUPPORT_AGENT,
        blocks=blocks,
        budget=BUDGET,
        max_turns=4,
    )
    reply = done.content or ""

    for tool, out in _tool_results(done.messages):  # what this message established
        if tool == "lookup_order":
            await s.set("order_id", out["id"])
            await s.set("open_issue", f"order {out['id']} {out['status']}")
        elif tool == "reship_order":
            issue = f"replacement {out['replacement']} sent {out['service']}, {out['tracking']}"
            await s.set("open_issue", issue)
    turns = [*turns, {"role": "customer", "text": message}, {"role": "agent", "text": reply}]
    await s.set("transcript", turns)
    extraction = None
    if end:  # learnt in the background: this run does not wait for it
        extraction = await ctx.memory.extract(
            transcript(name, customer_id, turns),
            namespace=namespace(customer_id),
            max_cost_usd=0.05,
        )
    return TurnReply(
        session=ctx.session.id,
        reply=reply,
        fields=fields,
        memory=[Hit(text=h.text, score=round(h.score, 3)) for h in hits],
        tools=[c["tool"] for c in done.tool_calls],
        extraction=extraction,
    )


def transcript(name: str, customer_id: str, turns: list[dict[str, str]]) -> str:
    """A conversation as the text an extraction reads."""
    lines = [f"Customer: {name} (customer {customer_id})"]
    lines += [f"{t['role']}: {t['text']}" for t in turns]
    return "\n".join(lines)


def _chat(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    roles = {"customer": "user", "agent": "assistant"}
    return [{"role": roles[t["role"]], "content": t["text"]} for t in turns]


def _tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(tool name, output) of each successful tool call in an agent's messages."""
    names: dict[str, str] = {}
    out: list[tuple[str, Any]] = []
    for m in messages:
        for call in m.get("tool_calls") or []:
            names[call["id"]] = call["function"]["name"]
        if m.get("role") == "tool" and not str(m.get("content", "")).startswith("error:"):
            out.append((names.get(m["tool_call_id"], ""), json.loads(m["content"])))
    return out


# --------------------------------------------------------------------------------------
# Two conversations, offline
# --------------------------------------------------------------------------------------

FIRST_CHAT = [
    "Hi, my order A-7781 has not arrived yet. Where is it?",
    "Please send a replacement by express shipping and email me the tracking link, I prefer "
    "email to phone calls.",
    "Unrelated question: what are your opening hours on public holidays?",
    "From now on please deliver my parcels to my office at 5 Dock Street, Leeds. "
    "Thanks, that's all.",
]
SECOND_CHAT = ["I ordered a tent yesterday: which address will it be delivered to?"]

Say = Literal["quiet", "verbose"]


async def conversation(
    customer_id: str, session: str, messages: list[str], say: Say = "verbose"
) -> list[TurnReply]:
    """Each message a run of `session`; the last one ends the conversation."""
    replies = []
    for n, message in enumerate(messages):
        handle = await app.start(
            support_turn,
            {"customer_id": customer_id, "message": message, "end": n == len(messages) - 1},
            session=session,
            id=f"{session}.{n + 1}",  # its turns: chat-1042-ab12cd-1.1, .2, ...
        )
        out: TurnReply = await handle.result(timeout=120)
        replies.append(out)
        if say == "verbose":
            await show_turn(handle.id, message, out)
    return replies


async def show_turn(run_id: str, message: str, out: TurnReply) -> None:
    """Print one turn: the session fields, the long-term hits, each call's context."""
    print(f"\ncustomer> {message}")
    print(f"  session fields: {json.dumps(out.fields)}")
    hits = [f"{h.score:.2f} {h.text!r}" for h in out.memory]
    print("  long-term hits: " + ("; ".join(hits) if hits else f"none above {MIN_RELEVANCE}"))
    for n, ctx in enumerate(await contexts(run_id), 1):
        cut = [f"{b['name']} {b['action']}" for b in ctx["blocks"] if b["action"] != "included"]
        print(
            f"  model call {n}: context {ctx['tokens']}/{ctx['budget']} tokens"
            + (f" ({', '.join(cut)})" if cut else "")
        )
    if out.tools:
        print(f"  tools: {', '.join(out.tools)}")
    print("agent> " + out.reply.replace("\n", "\n       "))


async def contexts(run_id: str) -> list[dict[str, Any]]:
    """The assembler's record of each model call of a run (what `keel show` prints)."""
    steps = await app.steps(run_id)
    return [s.output["context"] for s in steps if s.kind.value == "llm" and s.output]


async def learnt(extraction_id: str) -> list[tuple[str, str]]:
    """Wait for an extraction run; (status, text) of each item it found."""
    await app.handle(extraction_id, "keel.memory.extract").result(timeout=120)
    return [(i.status, i.text) for i in await app.memory.extracts(extraction_id)]


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--tag", default=uuid.uuid4().hex[:6], help="names the sessions")
    args = parser.parse_args(argv)
    customer_id = "1042"  # the conversations are Maya Patel's
    try:
        seed = await app.start(
            seed_customer, {"customer_id": customer_id}, id=f"seed-{customer_id}"
        )
        await seed.result(timeout=120)  # started again: replayed, nothing added twice
        for n, chat in enumerate((FIRST_CHAT, SECOND_CHAT), 1):
            session = f"chat-{customer_id}-{args.tag}-{n}"
            print(f"== conversation {n} (session {session})")
            replies = await conversation(customer_id, session, chat)
            extraction = replies[-1].extraction
            assert extraction is not None
            print(f"\n== what the extraction run {extraction} learnt, in the background:")
            for status, text in await learnt(extraction) or [("(nothing new)", "")]:
                print(f"  {status:9} {text}".rstrip())
            print()
    finally:
        await app.close()
    print(
        f"inspect a turn: keel show {session[:-2]}-1.2; the memories: keel memory list -n "
        f"{namespace(customer_id)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
