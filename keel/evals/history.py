"""`EvalHistory`: a suite's stored results as people read them (the console's Evals
pages): runs of a suite newest first, and one run's cases beside the same cases in the
suite's previous run, so what changed stands out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.errors import RunNotFound
from keel.store.evals import EvalCaseResult, EvalResult


@dataclass(frozen=True)
class CaseChange:
    """One case of a suite run (one repeat) with the same case and repeat in the
    previous run: each scorer's value now and then (None: the case was not there)."""

    case: EvalCaseResult
    before: EvalCaseResult | None
    changed: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @property
    def worse(self) -> bool:
        return any(b is not None and (a is None or a < b) for a, b in self.changed.values())


@dataclass(frozen=True)
class EvalDetail:
    result: EvalResult
    previous: EvalResult | None
    cases: list[CaseChange]


def _value(case: EvalCaseResult | None, scorer: str) -> float | None:
    score = (case.scores if case else {}).get(scorer)
    return float(score["value"]) if isinstance(score, dict) and "value" in score else None


class EvalHistory:
    """Stored eval results of an App's store.

    Example:
        detail = await EvalHistory(app).detail("eval-20260101-120000-abc123")
        worse = [c.case.case_id for c in detail.cases if c.worse]
    """

    def __init__(self, app: Any) -> None:
        self._app = app

    async def list(self, suite: str | None = None, limit: int = 100) -> list[EvalResult]:
        found: list[EvalResult] = await self._app.store.list_evals(suite, limit)
        return found

    async def detail(self, eval_id: str) -> EvalDetail:
        store = self._app.store
        cases = await store.eval_cases(eval_id)
        result = await store.get_eval(eval_id)
        if result is None:
            raise RunNotFound(f"no eval {eval_id!r} in {self._app.store_url}")
        earlier = [
            r
            for r in await store.list_evals(result.suite, 10_000)
            if (r.started_at, r.id) < (result.started_at, result.id)
        ]
        previous = earlier[0] if earlier else None
        before = {
            (c.case_id, c.repeat): c
            for c in (await store.eval_cases(previous.id) if previous else [])
        }
        changes = []
        for case in cases:
            old = before.get((case.case_id, case.repeat))
            changed = {}
            for scorer in sorted({*case.scores, *(old.scores if old else {})}):
                now, then = _value(case, scorer), _value(old, scorer)
                if previous is not None and now != then:
                    changed[scorer] = (now, then)
            changes.append(CaseChange(case, old, changed))
        return EvalDetail(result, previous, changes)
