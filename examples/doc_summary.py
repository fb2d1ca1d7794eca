"""Financial-document summary: a 50-way scatter-gather with a partial-completion policy.

    50 quarterly reports --ctx.map(concurrency=25)--> extract figures -> summarise
                         --> aggregate one Report (totals, top risks, per company)

Each document is processed in its own isolated child: two model calls through
`ctx.llm.structured`, each a journaled step (prompt, answer, tokens, cost). The
offline model takes 0.175 s per answer, so at concurrency 25 the 50 documents
take about as long as two of them, not fifty. Two documents are deliberately
malformed: the model cannot find a figure the schema requires, the retry with
the validation errors does not help, and the item fails with ValidationFailed;
`require=keel.AtLeast(0.9)` accepts 48 of 50 and the report lists the two
failures with their index and error instead of failing the whole run.
Re-running the same run id replays the journal: no document is processed twice.

Run it offline (the model is a rule-based ScriptedModel, see `_offline_model.py`):

    python examples/doc_summary.py
    keel run examples/doc_summary.py:summarize_docs --input '{}'

or with a real model, unchanged: `KEEL_MODEL=openai/gpt-4o-mini OPENAI_API_KEY=...`.
Set KEEL_EXAMPLE_LATENCY_SCALE=0 to drop the offline model's latency (tests do).
"""

import argparse
import asyncio
import os
import random
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

import keel

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # make the sibling offline model importable however we are loaded
    sys.path.insert(0, str(_HERE))

from _offline_model import offline_model  # noqa: E402


def latency_scale() -> float:
    raw = os.environ.get("KEEL_EXAMPLE_LATENCY_SCALE", "1")
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ValueError(f"KEEL_EXAMPLE_LATENCY_SCALE must be a number, got {raw!r}") from None


# The offline model answers in 0.175 s (scaled by KEEL_EXAMPLE_LATENCY_SCALE, read at
# import) and rate limits the first summary request of ~15% of the reports with an
# HTTP 429 (Retry-After 0.25 s). With KEEL_MODEL set, every alias is that real model.
OFFLINE_MODEL = offline_model(
    "offline-docs",
    latency=0.175 * latency_scale(),
    rate_limited=0.15,
    retry_after=0.25 * latency_scale(),
)

app = keel.App(
    llm=keel.llm.Gateway(
        models={"fast": OFFLINE_MODEL},
        default="fast",
        # A 429 or 5xx is retried with backoff, waiting at least the provider's Retry-After.
        retry=keel.Retry(attempts=4, backoff=0.2, max_backoff=2.0),
        # Each run re-reads its documents (so the demo's second run does real work);
        # turn the response cache on to re-use answers for identical requests.
        cache=False,
    )
)  # store from KEEL_STORE / keel.toml, default sqlite:///.keel/keel.db

DESCRIPTION = "Summarise 50 synthetic quarterly reports with a 50-way fan-out."

# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


class FinancialFigures(BaseModel):
    """Figures pulled out of one quarterly report, in millions of US dollars."""

    revenue_musd: float
    prior_revenue_musd: float | None = None
    net_income_musd: float
    operating_margin_pct: float | None = None


# The risk themes a summary may name, in a fixed order so ties always sort the same way.
RISK_THEMES: tuple[str, ...] = (
    "Supply chain disruption",
    "FX volatility",
    "Regulatory change",
    "Interest rates and financing",
    "Competitive pressure",
    "Cybersecurity",
    "Customer concentration",
    "Labour costs",
    "Input costs",
    "Demand softness",
)


class ReportSummary(BaseModel):
    """A two-sentence summary of one report and the risk themes it raises."""

    summary: str
    risks: list[str]
    outlook: Literal["positive", "mixed", "negative"]


class Document(BaseModel):
    id: str
    company: str
    quarter: str
    text: str
    sector: str = "unspecified"


class Company(BaseModel):
    name: str
    sector: str


class SummaryState(BaseModel):
    """What the run has established so far (stored as deltas, one step at a time)."""

    processed: int = 0
    failed: int = 0
    revenue_musd: float = 0.0
    ratings: dict[str, str | None] = {}


class DocSummary(BaseModel):
    """What one child returns for one document."""

    doc_id: str
    company: str
    sector: str
    quarter: str
    revenue_musd: float
    prior_revenue_musd: float | None
    net_income_musd: float
    operating_margin_pct: float | None
    risks: list[str]
    outlook: Literal["positive", "mixed", "negative"]
    summary: str


class FailedDoc(BaseModel):
    index: int
    doc_id: str
    company: str
    error_type: str
    error: str


class RiskCount(BaseModel):
    theme: str
    documents: int
    companies: list[str]


class CompanyLine(BaseModel):
    company: str
    sector: str
    quarters: list[str]
    revenue_musd: float  # over the quarters covered
    net_income_musd: float
    latest_quarter: str
    latest_net_margin_pct: float
    latest_growth_pct: float | None  # latest quarter's revenue vs the quarter before it
    outlook: Literal["positive", "mixed", "negative"]
    summary: str
    credit_rating: str | None = None  # None: the rating service was unavailable


class Report(BaseModel):
    generated_at: datetime
    documents: int
    succeeded: int
    required: str
    failed: list[FailedDoc]
    total_revenue_musd: float
    total_net_income_musd: float
    net_margin_pct: float
    loss_making: list[str]
    top_risks: list[RiskCount]
    companies: list[CompanyLine]
    unrated: list[str] = []  # companies whose credit rating could not be fetched

    def render(self) -> str:
        out = [
            f"Quarterly summary: {self.succeeded}/{self.documents} documents processed "
            f"(required {self.required})",
            f"Total revenue ${self.total_revenue_musd:,.1f}M, net income "
            f"${self.total_net_income_musd:,.1f}M ({self.net_margin_pct:.1f}% net margin)",
            f"Loss-making in their latest quarter: {', '.join(self.loss_making) or 'none'}",
            "",
            "Top risks:",
        ]
        out += [
            f"  {r.documents:>3} docs  {r.theme} ({len(r.companies)} companies)"
            for r in self.top_risks
        ]
        out += [
            "",
            f"{'company':<26}{'quarters':>9}{'revenue $M':>12}{'margin':>8}{'growth':>8}"
            f"{'rating':>8}  outlook",
        ]
        for c in self.companies:
            growth = f"{c.latest_growth_pct:+.1f}%" if c.latest_growth_pct is not None else "-"
            out.append(
                f"{c.company:<26}{len(c.quarters):>9}{c.revenue_musd:>12,.1f}"
                f"{c.latest_net_margin_pct:>7.1f}%{growth:>8}{c.credit_rating or 'n/a':>8}"
                f"  {c.outlook}"
            )
        if self.unrated:
            out += ["", f"Credit rating unavailable (degraded): {', '.join(self.unrated)}"]
        if self.failed:
            out += ["", "Failed documents:"]
            out += [
                f"  #{f.index} {f.doc_id} ({f.company}): {f.error_type}: {f.error}"
                for f in self.failed
            ]
        return "\n".join(out)


# --------------------------------------------------------------------------------------
# 50 synthetic quarterly reports (deterministic: same text on every machine)
# --------------------------------------------------------------------------------------

COMPANIES: list[tuple[str, str]] = [
    ("Aster Logistics", "logistics"),
    ("Brightwater Foods", "consumer"),
    ("Cobalt Grid Energy", "energy"),
    ("Driftwood Software", "software"),
    ("Ember Biotech", "healthcare"),
    ("Fjord Shipping", "logistics"),
    ("Granite Materials", "industrials"),
    ("Halcyon Health", "healthcare"),
    ("Ironbark Mining", "materials"),
    ("Juniper Retail", "consumer"),
    ("Kestrel Aerospace", "industrials"),
    ("Lumen Networks", "software"),
    ("Meridian Bank", "financials"),
    ("Northwind Apparel", "consumer"),
    ("Onyx Semiconductors", "technology"),
    ("Pinecrest Insurance", "financials"),
    ("Quarry Cement", "materials"),
    ("Redwood Renewables", "energy"),
    ("Solstice Travel", "consumer"),
    ("Tidewater Ports", "logistics"),
    ("Umbra Security", "software"),
    ("Vantage Robotics", "technology"),
    ("Willow Pharma", "healthcare"),
    ("Xenon Chemicals", "materials"),
    ("Yarrow Payments", "financials"),
]
QUARTERS = ("Q1 FY2026", "Q2 FY2026")

RISK_SENTENCES: dict[str, str] = {
    "supply": "Supply chain delays at two key suppliers could push deliveries into next quarter.",
    "fx": "Foreign exchange movements, notably a stronger dollar, weigh on overseas sales.",
    "regulation": "Pending regulation on data residency may require extra compliance work.",
    "rates": "Higher interest rates raise the cost of refinancing the 2027 notes.",
    "competition": "Competition from lower-cost new entrants is creating pricing pressure.",
    "cyber": "A ransomware attack on a peer highlights our own cyber exposure.",
    "concentration": "Our largest customer accounted for 31% of quarterly sales.",
    "labour": "Wage inflation and staff turnover in operations remain elevated.",
    "inputs": "Commodity and energy prices stay volatile and squeeze gross margin.",
    "demand": "Softening demand as consumer spending slows in core markets.",
}
SECTOR_RISK: dict[str, str] = {
    "logistics": "supply",
    "consumer": "demand",
    "energy": "inputs",
    "software": "cyber",
    "healthcare": "regulation",
    "industrials": "labour",
    "materials": "inputs",
    "financials": "rates",
    "technology": "competition",
}
COMMENTARY = (
    "Management reiterated full-year guidance.",
    "Management narrowed full-year guidance to the lower half of the range.",
    "Management raised full-year guidance on stronger bookings.",
    "The board approved a share buyback of up to 5% of outstanding shares.",
)

# Two documents are malformed on purpose: their extraction fails and the policy tolerates it.
MALFORMED: dict[int, tuple[str, str]] = {
    17: ("Revenue:", "Revenue: [table not recognised - see scanned page 4]"),
    38: ("Net ", "Net income: see note 7"),
}


def _money(musd: float) -> str:
    return f"${abs(musd):,.1f}M"


def synthetic_documents(seed: int = 2026) -> list[Document]:
    """25 fictional companies x 2 quarters = 50 reports, two of them malformed."""
    docs: list[Document] = []
    for company, sector in COMPANIES:
        rng = random.Random(f"{seed}:{company}")
        revenue = round(rng.uniform(60, 1800), 1)  # the quarter before Q1
        for quarter in QUARTERS:
            prior, revenue = revenue, round(revenue * (1 + rng.uniform(-0.08, 0.12)), 1)
            net_margin = rng.uniform(-0.06, 0.18)
            net = round(revenue * net_margin, 1)
            op_margin = (net_margin + rng.uniform(0.02, 0.06)) * 100
            risks = [SECTOR_RISK[sector]]
            others = sorted(set(RISK_SENTENCES) - set(risks))
            risks += rng.sample(others, rng.choice((1, 2)))
            net_line = f"Net income: {_money(net)}" if net >= 0 else f"Net loss: {_money(net)}"
            text = "\n".join(
                [
                    f"{company} - Quarterly report, {quarter}",
                    f"Sector: {sector}",
                    "",
                    "Results",
                    f"Revenue: {_money(revenue)}",
                    f"Prior-quarter revenue: {_money(prior)}",
                    net_line,
                    f"Operating margin: {op_margin:.1f}%",
                    "",
                    "Commentary",
                    rng.choice(COMMENTARY),
                    "",
                    "Risks",
                    *(f"- {RISK_SENTENCES[r]}" for r in risks),
                ]
            )
            index = len(docs)
            if index in MALFORMED:
                prefix, broken = MALFORMED[index]
                text = "\n".join(
                    broken if line.startswith(prefix) else line for line in text.splitlines()
                )
            slug = "".join(w[0] for w in company.split()).upper()
            docs.append(
                Document(
                    id=f"{slug}-{quarter.replace(' ', '-')}",
                    company=company,
                    quarter=quarter,
                    sector=sector,
                    text=text,
                )
            )
    return docs


# --------------------------------------------------------------------------------------
# Prompts and checks for the model calls (each ctx.llm call is a journaled step)
# --------------------------------------------------------------------------------------


def extraction_prompt(doc: Document) -> str:
    return f"""Extract the headline figures from this quarterly report.

<report>
{doc.text}
</report>

Answer with JSON, amounts in millions of US dollars (a figure in billions times 1000):
- revenue_musd: this quarter's revenue
- prior_revenue_musd: the prior quarter's revenue, if the report states it
- net_income_musd: net income; negative for a net loss
- operating_margin_pct: the operating margin in percent, if the report states it
Use only figures the report states. If one is missing or unreadable, leave its field
out: do not estimate it."""


def figures_are_plausible(figures: FinancialFigures) -> list[str]:
    """A semantic check on extracted figures: well-formed is not the same as right."""
    problems = []
    if figures.revenue_musd <= 0:
        problems.append(f"revenue must be positive, got {figures.revenue_musd}")
    if abs(figures.net_income_musd) > figures.revenue_musd:
        problems.append(
            f"net income {figures.net_income_musd} exceeds revenue {figures.revenue_musd}"
        )
    return problems


def summary_prompt(doc: Document, figures: FinancialFigures) -> str:
    return f"""Summarise this quarterly report for a portfolio review.

Company: {doc.company}
Quarter: {doc.quarter}

<figures>
{figures.model_dump_json()}
</figures>

<report>
{doc.text}
</report>

Answer with JSON:
- summary: two sentences. First how revenue moved and the net result (use the figures
  above), then the risks management flags.
- risks: the risk themes the report raises, each exactly one of: {"; ".join(RISK_THEMES)}
- outlook: positive, mixed or negative"""


def known_risk_themes(summary: ReportSummary) -> list[str]:
    """The report aggregates by theme, so a theme outside the list is an error."""
    return [
        f"risk {r!r} is not one of the listed themes ({'; '.join(RISK_THEMES)})"
        for r in summary.risks
        if r not in RISK_THEMES
    ]


# A credit-rating service that is down for one sector. The report degrades
# gracefully instead of failing: Keel returns the default and marks the step
# degraded, so `keel show` and reviewers see exactly which ratings are missing.
UNRATED_SECTORS = {"healthcare"}


class ServiceUnavailable(Exception):
    status_code = 503


@app.tool(
    retry=keel.Retry(attempts=2, backoff=0.05, budget=6),
    fallback=keel.Fallback.degrade(default=None),
)
async def credit_rating(company: Company) -> str | None:
    if company.sector in UNRATED_SECTORS:
        raise ServiceUnavailable(f"rating service unavailable for {company.sector}")
    score = random.Random(f"rating:{company.name}").random()
    return "A" if score > 0.66 else "BBB" if score > 0.33 else "BB"


# --------------------------------------------------------------------------------------
# The workflow
# --------------------------------------------------------------------------------------


async def extract_and_summarize(ctx: keel.Context, doc: Document) -> DocSummary:
    """One map item, in its own isolated child scope: two model calls, one document.

    An answer that fails its schema or check goes back to the model once with the
    errors (retries=1); if the retry is still wrong, ValidationFailed fails this item
    only. A 429 from the provider is retried by the gateway after the Retry-After.
    """
    figures = await ctx.llm.structured(
        FinancialFigures,
        prompt=extraction_prompt(doc),
        validate=figures_are_plausible,
        retries=1,
        name="extract",
    )
    summary = await ctx.llm.structured(
        ReportSummary,
        prompt=summary_prompt(doc, figures),
        validate=known_risk_themes,
        retries=1,
        name="summarize",
    )
    return DocSummary(
        doc_id=doc.id,
        company=doc.company,
        sector=doc.sector,
        quarter=doc.quarter,
        revenue_musd=figures.revenue_musd,
        prior_revenue_musd=figures.prior_revenue_musd,
        net_income_musd=figures.net_income_musd,
        operating_margin_pct=figures.operating_margin_pct,
        risks=summary.risks,
        outlook=summary.outlook,
        summary=summary.summary,
    )


def totals_are_consistent(state: SummaryState) -> str | None:
    """Checkpoint between the extraction phase and the report: catch a poisoned phase early."""
    if state.processed == 0:
        return "no document was processed"
    if state.revenue_musd <= 0:
        return f"total revenue {state.revenue_musd} is not positive"
    return None


@app.workflow(state=SummaryState)
async def summarize_docs(
    ctx: keel.Context,
    docs: list[Document] | None = None,
    concurrency: int = 25,
    require_fraction: float = 0.9,
) -> Report:
    documents = docs if docs is not None else synthetic_documents()
    policy = keel.AtLeast(float(require_fraction))
    async with ctx.phase("extract", check=totals_are_consistent):
        results = await ctx.map(
            extract_and_summarize, documents, concurrency=concurrency, require=policy
        )
        summaries = [DocSummary.model_validate(v) for v in results.ok]
        ctx.state.processed = len(summaries)
        ctx.state.failed = len(results.failed)
        ctx.state.revenue_musd = round(sum(s.revenue_musd for s in summaries), 1)
    companies = sorted({(s.company, s.sector) for s in summaries})
    rated = await ctx.map(
        credit_rating, [Company(name=n, sector=sec) for n, sec in companies], concurrency=10
    )
    ctx.state.ratings = {n: r for (n, _), r in zip(companies, rated.values, strict=True)}
    failed = [
        FailedDoc(
            index=f.index,
            doc_id=documents[f.index].id,
            company=documents[f.index].company,
            error_type=f.error.type,
            error=f.error.message,
        )
        for f in results.failed
    ]
    return build_report(
        summaries,
        failed,
        len(documents),
        policy.describe(len(documents)),
        ctx.now(),
        ratings=ctx.state.ratings,
    )


def _pct(part: float, whole: float) -> float:
    return round(part / whole * 100, 1) if whole else 0.0


def build_report(
    summaries: list[DocSummary],
    failed: list[FailedDoc],
    total: int,
    required: str,
    generated_at: datetime,
    ratings: dict[str, str | None] | None = None,
) -> Report:
    """Aggregate per-document summaries (pure, deterministic coordinator code)."""
    revenue = round(sum(s.revenue_musd for s in summaries), 1)
    net = round(sum(s.net_income_musd for s in summaries), 1)

    theme_docs: Counter[str] = Counter()
    theme_companies: dict[str, set[str]] = {}
    for s in summaries:
        for theme in s.risks:
            theme_docs[theme] += 1
            theme_companies.setdefault(theme, set()).add(s.company)
    order = list(RISK_THEMES)
    top = sorted(theme_docs, key=lambda t: (-theme_docs[t], order.index(t)))[:5]

    by_company: dict[str, list[DocSummary]] = {}
    for s in summaries:
        by_company.setdefault(s.company, []).append(s)
    lines: list[CompanyLine] = []
    for company, docs in by_company.items():
        docs = sorted(docs, key=lambda d: d.quarter)
        latest = docs[-1]
        growth = (
            round((latest.revenue_musd / latest.prior_revenue_musd - 1) * 100, 1)
            if latest.prior_revenue_musd
            else None
        )
        lines.append(
            CompanyLine(
                company=company,
                sector=latest.sector,
                quarters=[d.quarter for d in docs],
                revenue_musd=round(sum(d.revenue_musd for d in docs), 1),
                net_income_musd=round(sum(d.net_income_musd for d in docs), 1),
                latest_quarter=latest.quarter,
                latest_net_margin_pct=_pct(latest.net_income_musd, latest.revenue_musd),
                latest_growth_pct=growth,
                outlook=latest.outlook,
                summary=latest.summary,
                credit_rating=(ratings or {}).get(company),
            )
        )
    lines.sort(key=lambda c: (-c.revenue_musd, c.company))

    return Report(
        generated_at=generated_at,
        documents=total,
        succeeded=len(summaries),
        required=required,
        failed=failed,
        total_revenue_musd=revenue,
        total_net_income_musd=net,
        net_margin_pct=_pct(net, revenue),
        loss_making=sorted(c.company for c in lines if c.latest_net_margin_pct < 0),
        top_risks=[
            RiskCount(theme=t, documents=theme_docs[t], companies=sorted(theme_companies[t]))
            for t in top
        ],
        companies=lines,
        unrated=sorted(c for c, r in (ratings or {}).items() if r is None),
    )


# --------------------------------------------------------------------------------------
# Demo
# --------------------------------------------------------------------------------------


async def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--concurrency", type=int, default=25)
    parser.add_argument("--id", help="run id (re-using one replays the finished run)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    try:
        handle = await app.start(summarize_docs, {"concurrency": args.concurrency}, id=args.id)
        report: Report = await handle.result(timeout=300)
        elapsed = time.perf_counter() - started
        calls = [s for s in await app.steps(handle.id) if s.kind == "llm"]
    finally:
        await app.close()

    print(report.render())
    model_time = sum(float(s.output.get("latency_ms", 0.0)) for s in calls) / 1000
    cost = sum(float(s.output.get("cost_usd", 0.0)) for s in calls)
    retried = sum(s.attempts > 1 for s in calls)
    print(
        f"\nrun {handle.id}: {report.documents} documents, {len(calls)} model calls "
        f"({retried} retried after a 429, ${cost:.4f}), {model_time:.1f} s of model time "
        f"in total, finished in {elapsed:.2f} s at concurrency {args.concurrency}"
    )
    print(f"inspect the journal with: keel show {handle.id}")
    return report


if __name__ == "__main__":
    asyncio.run(main())
