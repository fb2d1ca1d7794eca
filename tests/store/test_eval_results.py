"""EvalStore conformance: suite runs and their cases are saved together, read back in
order, listed newest first per suite, and saving the same id again replaces it."""

from __future__ import annotations

from keel.store import EvalCaseResult, EvalResult, Store


def _result(eval_id: str, suite: str, at: float, outcome: str = "pass") -> EvalResult:
    return EvalResult(eval_id, suite, at, at + 2, outcome, {"means": {"fields": 0.75}})


def _case(eval_id: str, case_id: str, repeat: int = 0, passed: bool = True) -> EvalCaseResult:
    scores = {"fields": {"value": 1.0 if passed else 0.5, "passed": passed, "reason": "ok"}}
    return EvalCaseResult(
        eval_id, case_id, repeat, f"run-{case_id}-{repeat}", passed, scores, ("billing",)
    )


async def test_a_suite_run_and_its_cases_read_back(store: Store) -> None:
    cases = [_case("e1", "b", 1, False), _case("e1", "a"), _case("e1", "b", 0)]
    await store.save_eval(_result("e1", "triage", 10.0), cases)
    got = await store.eval_cases("e1")
    assert [(c.case_id, c.repeat) for c in got] == [("a", 0), ("b", 0), ("b", 1)]
    assert got[2] == cases[0]
    [listed] = await store.list_evals()
    assert listed == _result("e1", "triage", 10.0)
    assert await store.eval_cases("nope") == []
    assert await store.get_eval("e1") == listed and await store.get_eval("nope") is None


async def test_history_is_newest_first_per_suite(store: Store) -> None:
    await store.save_eval(_result("e1", "triage", 10.0), [_case("e1", "a")])
    await store.save_eval(_result("e2", "triage", 20.0, "fail"), [_case("e2", "a", passed=False)])
    await store.save_eval(_result("e3", "other", 30.0), [])
    assert [r.id for r in await store.list_evals()] == ["e3", "e2", "e1"]
    assert [r.id for r in await store.list_evals(suite="triage")] == ["e2", "e1"]
    assert [r.id for r in await store.list_evals(limit=1)] == ["e3"]


async def test_saving_the_same_id_again_replaces_it(store: Store) -> None:
    await store.save_eval(_result("e1", "triage", 10.0), [_case("e1", "a"), _case("e1", "b")])
    await store.save_eval(_result("e1", "triage", 10.0, "fail"), [_case("e1", "c", passed=False)])
    [only] = await store.list_evals()
    assert only.outcome == "fail"
    assert [c.case_id for c in await store.eval_cases("e1")] == ["c"]
