"""Offline, deterministic stand-ins for the model calls the examples make.

Keel's LLM gateway (`ctx.llm`) lands in a later issue. Until then every place an
example would ask a model goes through one of the small functions below, each
with the signature the real call will have:

    model_classify(text)                        -> Classification
    model_draft_reply(...)                      -> DraftText
    model_extract_figures(text)                 -> FinancialFigures
    model_summarize_report(company, quarter, text, figures) -> ReportSummary

They are rule-based (keywords and regular expressions), never random, so the
examples and their tests give the same answer on every machine. Swapping one for
a real model is a one-line change at its call site, e.g.

    label = await ctx.llm.structured(Classification, prompt=classify_prompt(ticket))
"""

import re
from typing import Literal

from pydantic import BaseModel, Field

# --------------------------------------------------------------------------------------
# Support tickets
# --------------------------------------------------------------------------------------

Category = Literal["outage", "bug", "billing", "account_access", "feature_request", "general"]
Urgency = Literal["low", "normal", "high", "critical"]


class Classification(BaseModel):
    """What the classifier says about a ticket."""

    category: Category
    urgency: Urgency
    confidence: float = Field(ge=0, le=1)
    signals: list[str] = Field(default_factory=list, description="the phrases that decided it")


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


def model_classify(text: str) -> Classification:
    """Classify a support ticket (stand-in for a structured-output model call).

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
        urgency: Urgency = "critical"
    elif any(k in lowered for k in _HIGH):
        urgency = "high"
    elif any(k in lowered for k in _LOW) or category == "feature_request":
        urgency = "low"
    else:
        urgency = "normal"
    return Classification(
        category=category,
        urgency=urgency,
        confidence=confidence,
        signals=signals,
    )


class DraftText(BaseModel):
    subject: str
    body: str


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


def model_draft_reply(
    *,
    subject: str,
    customer_name: str,
    category: str,
    tier: str,
    sla_hours: int,
) -> DraftText:
    """Draft a reply to a ticket (stand-in for a text-generation model call)."""
    first = customer_name.split()[0] if customer_name.strip() else "there"
    article = "an" if tier[:1].lower() in "aeiou" else "a"
    commitment = (
        f"As {article} {tier} customer you will hear back from us within {sla_hours} hours."
        if tier != "free"
        else "We will follow up as soon as we can."
    )
    body = (
        f"Hi {first},\n\n"
        f'Thank you for contacting us about "{subject}". {_NEXT_STEPS[category]}\n\n'
        f"{commitment}\n\n"
        "Best regards,\nThe Support Team"
    )
    return DraftText(subject=f"Re: {subject}", body=body)


# --------------------------------------------------------------------------------------
# Financial documents
# --------------------------------------------------------------------------------------


class ExtractionError(ValueError):
    """The document does not contain the figures the extractor needs."""


class FinancialFigures(BaseModel):
    """Figures pulled out of one quarterly report, in millions of US dollars."""

    revenue_musd: float
    prior_revenue_musd: float | None = None
    net_income_musd: float
    operating_margin_pct: float | None = None


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


def model_extract_figures(text: str) -> FinancialFigures:
    """Pull revenue, net income and margin out of a report (stand-in for an extraction model).

    Raises `ExtractionError` naming the missing field when a figure is absent or unreadable.
    """
    rev = _REVENUE.search(text)
    if rev is None:
        found = re.search(r"^\s*Revenue:\s*(.{0,60})$", text, re.M | re.I)
        detail = f"found {found.group(1).strip()!r}" if found else "no 'Revenue:' line"
        raise ExtractionError(
            f"no revenue figure ({detail}); expected a line like 'Revenue: $412.7M'"
        )
    net = _NET.search(text)
    if net is None:
        found = re.search(r"^\s*Net (?:income|profit|loss):\s*(.{0,60})$", text, re.M | re.I)
        detail = f"found {found.group(1).strip()!r}" if found else "no 'Net income:' line"
        raise ExtractionError(
            f"no net income figure ({detail}); expected a line like 'Net income: $38.2M'"
        )
    net_value = _musd(net.group(2), net.group(3), net.group(4))
    if net.group(1).lower() == "loss" and net_value > 0:
        net_value = -net_value
    prior = _PRIOR.search(text)
    margin = _MARGIN.search(text)
    return FinancialFigures(
        revenue_musd=_musd(rev.group(1), rev.group(2), rev.group(3)),
        prior_revenue_musd=_musd(prior.group(1), prior.group(2), prior.group(3)) if prior else None,
        net_income_musd=net_value,
        operating_margin_pct=float(margin.group(1)) if margin else None,
    )


class ReportSummary(BaseModel):
    """A two-sentence summary of one report and the risk themes it raises."""

    summary: str
    risks: list[str]
    outlook: Literal["positive", "mixed", "negative"]


# Risk themes, in a fixed order so ties always sort the same way.
RISK_THEMES: dict[str, tuple[str, ...]] = {
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


def model_summarize_report(
    company: str, quarter: str, text: str, figures: FinancialFigures
) -> ReportSummary:
    """Summarise one quarterly report (stand-in for a summarisation model call)."""
    risk_text = _risk_section(text).lower()
    risks = [theme for theme, kws in RISK_THEMES.items() if any(k in risk_text for k in kws)]

    growth = None
    if figures.prior_revenue_musd:
        growth = (figures.revenue_musd / figures.prior_revenue_musd - 1) * 100
    margin = figures.net_income_musd / figures.revenue_musd * 100 if figures.revenue_musd else 0.0

    if figures.net_income_musd < 0:
        outlook: Literal["positive", "mixed", "negative"] = "negative"
    elif growth is not None and growth >= 2 and margin >= 8:
        outlook = "positive"
    else:
        outlook = "mixed"

    moved = (
        f"grew revenue {growth:.1f}% quarter on quarter to ${figures.revenue_musd:,.1f}M"
        if growth is not None and growth >= 0
        else f"saw revenue fall {abs(growth):.1f}% to ${figures.revenue_musd:,.1f}M"
        if growth is not None
        else f"reported revenue of ${figures.revenue_musd:,.1f}M"
    )
    result = (
        f"a net loss of ${abs(figures.net_income_musd):,.1f}M"
        if figures.net_income_musd < 0
        else f"net income of ${figures.net_income_musd:,.1f}M ({margin:.1f}% net margin)"
    )
    flagged = (
        "Management flags " + ", ".join(r.lower() for r in risks[:3]) + "."
        if risks
        else "Management flags no material new risks."
    )
    return ReportSummary(
        summary=f"{company} {moved} in {quarter}, with {result}. {flagged}",
        risks=risks,
        outlook=outlook,
    )
