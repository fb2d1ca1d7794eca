"""`EvalStore`: the results of eval suite runs (`keel eval`), one record per suite run
and one per case and repeat, so a suite's history and its per-case changes can be read
back (the console, `keel.evals`)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EvalResult:
    """One run of a suite: its outcome (`pass`, `fail` or `error`) and summary.

    `summary` is JSON: per-scorer means, threshold checks and the baseline comparison.
    """

    id: str
    suite: str
    started_at: float
    ended_at: float
    outcome: str
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalCaseResult:
    """One case of one suite run, one repeat: its run and each scorer's score
    (`{scorer: {"value", "passed", "reason"}}`)."""

    eval_id: str
    case_id: str
    repeat: int
    run_id: str | None
    passed: bool
    scores: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


class EvalStore(abc.ABC):
    """Stored eval results.

    Example:
        await store.save_eval(result, cases)
        history = await store.list_evals(suite="triage")
    """

    @abc.abstractmethod
    async def save_eval(self, result: EvalResult, cases: list[EvalCaseResult]) -> None:
        """Store a suite run and its cases in one transaction; saving the same id again
        replaces it (a re-run of a report never duplicates)."""

    @abc.abstractmethod
    async def list_evals(self, suite: str | None = None, limit: int = 50) -> list[EvalResult]:
        """Suite runs, newest first (only `suite`'s when given)."""

    @abc.abstractmethod
    async def get_eval(self, eval_id: str) -> EvalResult | None:
        """One suite run, or None."""

    @abc.abstractmethod
    async def eval_cases(self, eval_id: str) -> list[EvalCaseResult]:
        """The cases of one suite run, by case id then repeat ([] for an unknown id)."""
