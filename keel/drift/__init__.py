"""Drift monitoring (docs/drift.md): monitors declared per workflow watch the signals that
move first in production (a classifier's class mix, a field's confidence, the approval
rate, cost) and compare a recent window with a reference window.

Example:
    @app.workflow(monitors=[keel.drift.Distribution("category"),
                            keel.drift.Confidence("category"),
                            keel.drift.ApprovalRate(),
                            keel.drift.Metric("cost_usd")])
    async def triage(ctx: keel.Context, ticket: str) -> dict: ...

    rows = await app.drift.report("triage")   # or: keel drift report --workflow triage
"""

from __future__ import annotations

from keel.drift.monitors import (
    ApprovalRate,
    Confidence,
    Distribution,
    Judgement,
    Metric,
    Monitor,
    Pinned,
    Rolling,
)
from keel.drift.report import MonitorStatus

__all__ = [
    "ApprovalRate",
    "Confidence",
    "Distribution",
    "Judgement",
    "Metric",
    "Monitor",
    "MonitorStatus",
    "Pinned",
    "Rolling",
]
