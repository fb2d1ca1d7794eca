"""Evals: datasets run through a workflow as real runs, scored from their journals, and
gated in CI against thresholds and a committed baseline (`keel eval`; docs/evals.md).

Example:
    suite = keel.evals.Suite("triage", triage, "cases.jsonl",
                             scorers=[keel.evals.fields("category")],
                             thresholds={"category": 0.9})
"""

from __future__ import annotations

from keel.evals.dataset import Case, load_dataset
from keel.evals.judge import judge
from keel.evals.report import Report, load_baseline, save_baseline
from keel.evals.run import Call, EvalRun, Score, Scorer
from keel.evals.runner import HarnessError
from keel.evals.scorers import (
    budget,
    exact,
    fields,
    ignore,
    latency,
    near,
    route,
    same_set,
    trajectory,
)
from keel.evals.stats import Paired, paired
from keel.evals.suite import Suite

__all__ = [
    "Call",
    "Case",
    "EvalRun",
    "HarnessError",
    "Paired",
    "Report",
    "Score",
    "Scorer",
    "Suite",
    "budget",
    "exact",
    "fields",
    "ignore",
    "judge",
    "latency",
    "load_baseline",
    "load_dataset",
    "near",
    "paired",
    "route",
    "same_set",
    "save_baseline",
    "trajectory",
]
