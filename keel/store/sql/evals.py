"""Eval results (the `keel.store.evals.EvalStore` queries): `eval_results`, one row per
suite run, and `eval_cases`, one per case and repeat. Scores and summaries are JSON text:
they hold scores and short reasons, the runs' payloads stay in the journal."""

from __future__ import annotations

import json

from keel.store.evals import EvalCaseResult, EvalResult
from keel.store.sql.core import Session


def save_eval(s: Session, result: EvalResult, cases: list[EvalCaseResult]) -> None:
    with s.write():
        s.execute("DELETE FROM eval_cases WHERE eval_id=?", (result.id,))
        s.execute("DELETE FROM eval_results WHERE id=?", (result.id,))
        s.execute(
            "INSERT INTO eval_results (id, suite, started_at, ended_at, outcome, summary)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                result.id,
                result.suite,
                result.started_at,
                result.ended_at,
                result.outcome,
                json.dumps(result.summary, sort_keys=True, default=str),
            ),
        )
        s.executemany(
            "INSERT INTO eval_cases (eval_id, case_id, repeat_no, run_id, passed, scores, tags)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    result.id,
                    c.case_id,
                    c.repeat,
                    c.run_id,
                    int(c.passed),
                    json.dumps(c.scores, sort_keys=True, default=str),
                    json.dumps(list(c.tags)),
                )
                for c in cases
            ],
        )


def list_evals(s: Session, suite: str | None, limit: int) -> list[EvalResult]:
    where, args = ("WHERE suite=?", [suite]) if suite is not None else ("", [])
    rows = s.execute(
        "SELECT id, suite, started_at, ended_at, outcome, summary FROM eval_results "
        f"{where} ORDER BY started_at DESC, id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [EvalResult(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]


def get_eval(s: Session, eval_id: str) -> EvalResult | None:
    r = s.execute(
        "SELECT id, suite, started_at, ended_at, outcome, summary FROM eval_results WHERE id=?",
        (eval_id,),
    ).fetchone()
    return EvalResult(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) if r else None


def eval_cases(s: Session, eval_id: str) -> list[EvalCaseResult]:
    rows = s.execute(
        "SELECT eval_id, case_id, repeat_no, run_id, passed, scores, tags FROM eval_cases"
        " WHERE eval_id=? ORDER BY case_id, repeat_no",
        (eval_id,),
    ).fetchall()
    return [
        EvalCaseResult(
            r[0], r[1], r[2], r[3], bool(r[4]), json.loads(r[5]), tuple(json.loads(r[6] or "[]"))
        )
        for r in rows
    ]
