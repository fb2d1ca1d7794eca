"""The offline model behind both examples: a `keel.llm.ScriptedModel` that reads prompts.

The examples ask for everything through `ctx.llm` (classify a ticket, draft a
reply, extract figures from a report, summarise it). With no `KEEL_MODEL` set,
those calls go through LiteLLM to this model, a deterministic rule-based
function of the messages: keywords, regular expressions and templates. It
parses what it needs out of the prompt text the examples send, exactly as a
real model would have to:

    prompt contains                       the model answers
    <ticket>...</ticket>                  a Classification as JSON (+ logprobs)
    <ticket> and "Customer name: ..."     the reply's text
    <report>...</report>                  the figures it can read, as JSON
    <report> and <figures>...</figures>   a ReportSummary as JSON
    the SUPPORT_AGENT system prompt       a tool call, or the agent's reply (support_agent)
    <transcript>...</transcript>          the durable facts it states, as JSON

Like a real model it can fail: a figure the report does not state is left out
of its answer (so schema validation rejects it), it can be rate limited (an
HTTP 429 with a Retry-After header), and it takes time to answer (`latency`).
It reads the feedback Keel appends when an answer is rejected, so a retry can
correct an answer that is fixable.

Set KEEL_MODEL (for example `openai/gpt-4o-mini`, with OPENAI_API_KEY) and the
same prompts go to a real model instead; nothing here is used then.
"""

from __future__ import annotations

import json
import math
import random
import re
from typing import Any

from keel.llm import Reply, ScriptedModel

Message = dict[str, Any]

# --------------------------------------------------------------------------------------
# Support tickets
# --------------------------------------------------------------------------------------

_CATEGORY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "outage": (
        "outage",
        "is down",
        "are down",
        "503",
        "502",
        "not loading",
        "unreachable",
        "all users",
        "status page",
    ),
    "bug": (
        "error",
        "bug",
        "crash",
        "broken",
        "exception",
        "stack trace",
        "regression",
        "doesn't work",
        "does not work",
        "wrong result",
    ),
    "billing": (
        "invoice",
        "charged",
        "charge",
        "refund",
        "billing",
        "payment",
        "credit card",
        "subscription",
        "overcharged",
        "receipt",
    ),
    "account_access": (
        "password",
        "log in",
        "login",
        "locked out",
        "2fa",
        "two-factor",
        "sso",
        "reset link",
        "can't sign in",
        "cannot sign in",
    ),
    "feature_request": (
        "feature request",
        "would be nice",
        "please add",
        "it would help",
        "suggestion",
        "roadmap",
        "support for",
    ),
}

_CRITICAL = ("outage", "production is down", "all users", "data loss", "security breach")
_HIGH = ("urgent", "asap", "immediately", "blocked", "cannot", "can't", "deadline", "today")
_LOW = ("no rush", "whenever", "would be nice", "suggestion", "minor")


def classify_ticket(text: str) -> dict[str, Any]:
    """Classify a ticket's text: category, urgency, confidence and the deciding phrases.

    Scores each category by the keywords it contains; confidence grows with the
    winner's lead over the runner-up. Text with no signal is `general` at 0.5.
    """
    lowered = text.lower()
    scores: dict[str, list[str]] = {
        cat: [kw for kw in kws if kw in lowered] for cat, kws in _CATEGORY_KEYWORDS.items()
    }
    ranked = sorted(scores.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    (best, hits), (_, runner_up) = ranked[0], ranked[1]
    if not hits:
        category, confidence, signals = "general", 0.5, []
    else:
        lead = len(hits) - len(runner_up)
        category, signals = best, hits
        confidence = round(min(0.97, 0.6 + 0.1 * len(hits) + 0.08 * lead), 2)

    if any(k in lowered for k in _CRITICAL):
        urgency = "critical"
    elif any(k in lowered for k in _HIGH):
        urgency = "high"
    elif any(k in lowered for k in _LOW) or category == "feature_request":
        urgency = "low"
    else:
        urgency = "normal"
    return {"category": category, "urgency": urgency, "confidence": confidence, "signals": signals}


_NEXT_STEPS: dict[str, str] = {
    "outage": (
        "Our on-call engineers are investigating now and we will post updates on the status "
        "page every 30 minutes until service is fully restored."
    ),
    "bug": (
        "I have reproduced the steps you describe and filed them with our engineering team. "
        "If you can share the request id or a screenshot of the error, it will speed up the fix."
    ),
    "billing": (
        "I have opened a billing review for this charge. If it was made in error, the refund "
        "goes back to the original payment method within 5-7 business days."
    ),
    "account_access": (
        "For your security I have sent a fresh sign-in link to the address on file; it expires "
        "in 30 minutes. If two-factor codes are the problem, reply and we will reset them."
    ),
    "feature_request": (
        "I have passed this to our product team with your use case attached. We review "
        "requests every month and I will let you know if it makes the roadmap."
    ),
    "general": (
        "I have read your message and a specialist will follow up with the details you need."
    ),
}


def draft_reply(
    *, subject: str, customer_name: str, category: str, tier: str, sla_hours: int
) -> str:
    """The reply's text, from a template per category; "Hi there" when no name is known."""
    first = customer_name.split()[0] if customer_name.strip() else "there"
    article = "an" if tier[:1].lower() in "aeiou" else "a"
    commitment = (
        f"As {article} {tier} customer you will hear back from us within {sla_hours} hours."
        if tier != "free"
        else "We will follow up as soon as we can."
    )
    return (
        f"Hi {first},\n\n"
        f'Thank you for contacting us about "{subject}". '
        f"{_NEXT_STEPS.get(category, _NEXT_STEPS['general'])}\n\n"
        f"{commitment}\n\n"
        "Best regards,\nThe Support Team"
    )


# --------------------------------------------------------------------------------------
# Financial documents
# --------------------------------------------------------------------------------------

_MONEY = r"(-)?\$\s?([0-9][0-9,]*(?:\.[0-9]+)?)\s?(M|B|million|billion)\b"
_REVENUE = re.compile(r"^\s*Revenue:\s*" + _MONEY, re.M | re.I)
_PRIOR = re.compile(r"^\s*Prior[- ]quarter revenue:\s*" + _MONEY, re.M | re.I)
_NET = re.compile(r"^\s*Net (income|profit|loss):\s*" + _MONEY, re.M | re.I)
_MARGIN = re.compile(r"^\s*Operating margin:\s*(-?[0-9]+(?:\.[0-9]+)?)\s?%", re.M | re.I)


def _musd(sign: str | None, amount: str, unit: str) -> float:
    value = float(amount.replace(",", ""))
    if unit.lower().startswith("b"):
        value *= 1000
    return round(-value if sign else value, 3)


def read_figures(text: str) -> dict[str, float]:
    """The figures a report states, in $M. A figure that is absent or unreadable is left
    out: the model does not guess (so an answer can lack a field the schema requires)."""
    figures: dict[str, float] = {}
    if rev := _REVENUE.search(text):
        figures["revenue_musd"] = _musd(rev.group(1), rev.group(2), rev.group(3))
    if prior := _PRIOR.search(text):
        figures["prior_revenue_musd"] = _musd(prior.group(1), prior.group(2), prior.group(3))
    if net := _NET.search(text):
        value = _musd(net.group(2), net.group(3), net.group(4))
        figures["net_income_musd"] = -abs(value) if net.group(1).lower() == "loss" else value
    if margin := _MARGIN.search(text):
        figures["operating_margin_pct"] = float(margin.group(1))
    return figures


# Keywords that signal each risk theme the examples' prompt lists.
RISK_KEYWORDS: dict[str, tuple[str, ...]] = {
    "Supply chain disruption": ("supply chain", "shipping", "supplier"),
    "FX volatility": ("foreign exchange", "currency", "fx "),
    "Regulatory change": ("regulat", "compliance", "licens"),
    "Interest rates and financing": ("interest rate", "refinanc", "borrowing cost"),
    "Competitive pressure": ("competit", "pricing pressure", "new entrant"),
    "Cybersecurity": ("cyber", "ransomware", "data breach"),
    "Customer concentration": ("largest customer", "customer concentration", "single customer"),
    "Labour costs": ("wage", "labour", "labor", "staff turnover"),
    "Input costs": ("commodity", "input cost", "raw material", "energy prices"),
    "Demand softness": ("softening demand", "consumer spending", "weaker demand", "order backlog"),
}


def _risk_section(text: str) -> str:
    """The text after a 'Risks' heading (reports end with it), else the whole text."""
    _, heading, tail = text.partition("\nRisks\n")
    return tail if heading else text


def summarize_report(
    company: str, quarter: str, text: str, figures: dict[str, Any]
) -> dict[str, Any]:
    """A two-sentence summary, the risk themes raised and an outlook, from the figures."""
    risk_text = _risk_section(text).lower()
    risks = [theme for theme, kws in RISK_KEYWORDS.items() if any(k in risk_text for k in kws)]

    revenue = float(figures["revenue_musd"])
    net = float(figures["net_income_musd"])
    prior = figures.get("prior_revenue_musd")
    growth = (revenue / prior - 1) * 100 if prior else None
    margin = net / revenue * 100 if revenue else 0.0

    if net < 0:
        outlook = "negative"
    elif growth is not None and growth >= 2 and margin >= 8:
        outlook = "positive"
    else:
        outlook = "mixed"

    moved = (
        f"grew revenue {growth:.1f}% quarter on quarter to ${revenue:,.1f}M"
        if growth is not None and growth >= 0
        else f"saw revenue fall {abs(growth):.1f}% to ${revenue:,.1f}M"
        if growth is not None
        else f"reported revenue of ${revenue:,.1f}M"
    )
    result = (
        f"a net loss of ${abs(net):,.1f}M"
        if net < 0
        else f"net income of ${net:,.1f}M ({margin:.1f}% net margin)"
    )
    flagged = (
        "Management flags " + ", ".join(r.lower() for r in risks[:3]) + "."
        if risks
        else "Management flags no material new risks."
    )
    return {
        "summary": f"{company} {moved} in {quarter}, with {result}. {flagged}",
        "risks": risks,
        "outlook": outlook,
    }


# --------------------------------------------------------------------------------------
# Reading prompts, answering them
# --------------------------------------------------------------------------------------


class RateLimitedError(Exception):
    """What a provider's HTTP client raises on a 429: the status and a Retry-After header.

    LiteLLM wraps it in its own `RateLimitError`, keeping the status and the HTTP
    response (so the header); Keel classifies that as transient and retries.
    """

    status_code = 429

    def __init__(self, retry_after: float) -> None:
        import httpx  # comes with LiteLLM

        super().__init__(f"rate limit reached; retry after {retry_after:.2f}s")
        self.retry_after = retry_after
        self.response = httpx.Response(
            429,
            headers={"retry-after": f"{retry_after:.3f}"},
            request=httpx.Request("POST", "https://offline.invalid/v1/chat/completions"),
        )


class UnknownPrompt(Exception):
    """A prompt the offline model cannot read: an HTTP 400, not worth retrying."""

    status_code = 400


def _user_texts(messages: list[Message]) -> list[str]:
    return [m["content"] for m in messages if m.get("role") == "user" and m.get("content")]


def _tagged(text: str, tag: str) -> str | None:
    found = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, re.S)
    return found.group(1) if found else None


def _field(text: str, name: str) -> str:
    found = re.search(rf"^{re.escape(name)}:[ \t]*(.*)$", text, re.M)
    return found.group(1).strip() if found else ""


def _feedback(messages: list[Message]) -> str:
    """Why Keel rejected the previous answer, when this request is a retry (else "")."""
    texts = _user_texts(messages)
    last = texts[-1] if len(texts) > 1 else ""
    return last if "rejected" in last else ""


def _confidence_logprobs(confidence: float, content: str) -> list[float]:
    """Per-token logprobs whose geometric-mean probability is `confidence`."""
    return [math.log(confidence)] * max(1, len(content) // 4)


def _classify(prompt: str, messages: list[Message], params: dict[str, Any]) -> Reply:
    label = classify_ticket(_tagged(prompt, "ticket") or "")
    if "urgency 'critical' is reserved" in _feedback(messages) and label["urgency"] == "critical":
        label["urgency"] = "high"  # told critical is only for outages and access problems
    content = json.dumps(label)
    if not params.get("logprobs"):
        return Reply(content=content)
    return Reply(content=content, logprobs=_confidence_logprobs(label["confidence"], content))


def _draft(prompt: str) -> Reply:
    name = _field(prompt, "Customer name")
    sla = re.search(r"(\d+)", _field(prompt, "SLA"))
    return Reply(
        content=draft_reply(
            subject=_field(_tagged(prompt, "ticket") or "", "Subject"),
            customer_name="" if name.startswith("(") else name,  # "(not on file)"
            category=_field(prompt, "Category") or "general",
            tier=_field(prompt, "Account tier") or "free",
            sla_hours=int(sla.group(1)) if sla else 72,
        )
    )


def _extract(prompt: str) -> Reply:
    return Reply(content=json.dumps(read_figures(_tagged(prompt, "report") or "")))


def _summarize(prompt: str) -> Reply:
    figures = json.loads(_tagged(prompt, "figures") or "{}")
    summary = summarize_report(
        _field(prompt, "Company"),
        _field(prompt, "Quarter"),
        _tagged(prompt, "report") or "",
        figures,
    )
    return Reply(content=json.dumps(summary))


# --------------------------------------------------------------------------------------
# The support agent (support_agent.py) and what it learns from a conversation
# --------------------------------------------------------------------------------------

SUPPORT_AGENT = """You are the support agent of Keel Outfitters, an online outdoor shop.
Before the customer's message you may get, as separate messages: the conversation so far;
what this conversation has established, one `field: value` (JSON) a line; and what we know
about the customer from earlier conversations, one fact a line starting with "- ". Use a
fact only when it matters for this message. Tools: lookup_order to see where an order is,
reship_order to send a replacement (express=true when the customer's plan includes free
express shipping). Answer in two or three short sentences."""

_ORDER = re.compile(r"\b[A-Z]-\d{4}\b")
_SESSION_LINE = re.compile(r"^([a-z_]+): (.+)$")
_DELIVER_TO = re.compile(
    r"from now on,? (?:please )?(?:deliver|send) my (?:parcels|orders) to my ([^.]+)", re.I
)


def _session_fields(messages: list[Message]) -> dict[str, Any]:
    """The `field: value` lines of a message made only of them (Block.fields)."""
    for text in _user_texts(messages):
        lines = [_SESSION_LINE.match(line) for line in text.splitlines()]
        if lines and all(lines):
            try:
                return {m.group(1): json.loads(m.group(2)) for m in lines if m}
            except json.JSONDecodeError:
                continue
    return {}


def _facts_given(messages: list[Message]) -> list[str]:
    """The long-term facts a message lists ("- " lines, Block.facts)."""
    for text in _user_texts(messages):
        lines = text.splitlines()
        if lines and all(line.startswith("- ") for line in lines):
            return [line[2:] for line in lines]
    return []


def _tool_outputs(messages: list[Message]) -> dict[str, Any]:
    """Each tool's latest output in this turn (after the last user message)."""
    last_user = max(i for i, m in enumerate(messages) if m.get("role") == "user")
    names: dict[str, str] = {}
    out: dict[str, Any] = {}
    for m in messages[last_user:]:
        for call in m.get("tool_calls") or []:
            names[call["id"]] = call["function"]["name"]
        if m.get("role") == "tool" and not str(m.get("content")).startswith("error:"):
            out[names.get(m["tool_call_id"], "")] = json.loads(m["content"])
    return out


def _support(messages: list[Message]) -> Reply:
    """The agent's next move: a tool call while it lacks something, then its reply."""
    task = _user_texts(messages)[-1]
    low = task.lower()
    fields, facts, done = _session_fields(messages), _facts_given(messages), _tool_outputs(messages)
    order = (_ORDER.findall(task) or [fields.get("order_id")])[0]
    asks_where = any(w in low for w in ("where is", "not arrived", "hasn't arrived", "status"))
    if order and asks_where and "lookup_order" not in done:
        return Reply(tool_calls=[{"name": "lookup_order", "arguments": {"order_id": order}}])
    premium = any("premium member" in f for f in facts)
    if order and "replacement" in low and "reship_order" not in done:
        args = {"order_id": order, "express": premium or "express" in low}
        return Reply(tool_calls=[{"name": "reship_order", "arguments": args}])

    name = str(fields.get("customer_name") or "").split(" ")[0] or "there"
    said: list[str] = []
    if found := done.get("lookup_order"):
        said.append(
            f"Order {found['id']} is {found['status']} with {found['carrier']} (last scan: "
            f"{found['last_scan']})."
        )
        before = [m for f in facts if "never arrived" in f and (m := _ORDER.search(f))]
        if before and found["status"] != "delivered":  # it happened to this customer before
            said.append(f"I am sorry this happened again after order {before[0].group(0)}.")
        said.append("I can send a replacement right away.")
    if sent := done.get("reship_order"):
        said.append(f"Replacement {sent['replacement']} ships {sent['service']} today.")
        if premium and sent["service"] == "express":
            said.append("Express is free with your premium membership.")
        if "email" in low or any("by email" in f for f in facts):
            said.append(f"I will email you the tracking number ({sent['tracking']}).")
    if "opening hours" in low:
        said.append("Our shops open 10:00-16:00 on public holidays; this chat never closes.")
    if dest := _DELIVER_TO.search(task):
        said.append(f"Noted: from now on your parcels go to your {dest.group(1)}.")
    if "delivered" in low or "deliver to" in low:
        where = [f.split(" parcels delivered to the ")[1] for f in facts if "parcels del" in f]
        said.append(
            f"It goes to the {where[0].removesuffix(' from now on')}, as you asked last time."
            if where
            else "It goes to the address on your account."
        )
    if "that's all" in low or "thanks" in low:
        said.append("Thank you, have a good day!")
    if not said:
        said.append("How can I help? If it is about an order, tell me its number.")
    return Reply(content=f"Hi {name}! " + " ".join(said))


def learn_facts(transcript: str) -> list[str]:
    """The durable facts a support conversation states, one sentence each, named."""
    who = re.search(r"^Customer: (.+?) \(customer", transcript, re.M)
    name = who.group(1) if who else "The customer"
    facts = []
    for line in transcript.splitlines():
        role, _, text = line.partition(": ")
        if role == "customer" and re.search(r"prefer (?:e-?mail|email)", text, re.I):
            facts.append(f"{name} prefers to be contacted by email, never by phone")
        if role == "customer" and (dest := _DELIVER_TO.search(text)):
            facts.append(
                f"{name} wants parcels delivered to the {dest.group(1).strip()} from now on"
            )
        lost = re.search(r"Order (\S+) is lost in transit", text)
        if role == "agent" and lost and "Replacement" in transcript:
            facts.append(f"{name}'s order {lost.group(1)} was lost in transit and replaced")
    return facts


def offline_model(
    name: str,
    *,
    latency: float = 0.0,
    rate_limited: float = 0.0,
    retry_after: float = 0.25,
) -> ScriptedModel:
    """The offline model, priced like gpt-4o-mini so costs and budgets look real.

    `latency`: seconds each answer takes. `rate_limited`: the share of reports
    (chosen by a seeded draw per company and quarter) whose first summary request
    gets an HTTP 429 asking to retry after `retry_after` seconds.
    """
    limited: set[str] = set()  # reports this model has already rate limited once

    def answer(messages: list[Message], params: dict[str, Any]) -> Reply:
        texts = _user_texts(messages)
        prompt = texts[0] if texts else ""
        if any(m.get("role") == "system" and m.get("content") == SUPPORT_AGENT for m in messages):
            return _support(messages)
        if (said := _tagged(texts[-1] if texts else "", "transcript")) is not None:
            return Reply(content=json.dumps({"facts": learn_facts(said)}))
        if "<ticket>" in prompt:
            if "Customer name:" in prompt:
                return _draft(prompt)
            return _classify(prompt, messages, params)
        if "<report>" in prompt and "<figures>" in prompt:
            report = f"{_field(prompt, 'Company')}/{_field(prompt, 'Quarter')}"
            draw = random.Random(f"ratelimit:{report}").random()
            if draw < rate_limited and report not in limited:
                limited.add(report)
                raise RateLimitedError(retry_after)
            return _summarize(prompt)
        if "<report>" in prompt:
            return _extract(prompt)
        raise UnknownPrompt(
            f"the offline model only reads the examples' prompts (<ticket>, <report>, "
            "<transcript> or the support agent's), "
            f"not {prompt[:80]!r}; set KEEL_MODEL to use a real model"
        )

    return ScriptedModel(
        answer, name=name, price_as="gpt-4o-mini", latency=latency, logprob=math.log(0.98)
    )
