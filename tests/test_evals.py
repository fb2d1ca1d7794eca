"""keel.evals: datasets, the scorers reading a run's journal, the paired bootstrap, and
suites running real runs (approvals decided through app.approvals) with stored results.

The gate end to end (`keel eval` exit codes on the triage example): tests/test_evals_gate.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import keel
from keel import evals
from keel.engine.runtime import Settings
from keel.errors import ConfigError
from keel.evals import Case, EvalRun, Score
from keel.hitl import Approval
from keel.store import open_store
from keel.types import RunInfo, RunStatus, StepKind, StepRecord, StepStatus
from tests.limits import WAIT

# -- a small workflow: classify (model), look up (tool), refund behind an approval ------


def build(url: str) -> tuple[keel.App, Any]:
    model = keel.llm.ScriptedModel(
        rules=[("refund", "billing"), ("down", "outage")], default="general", price_as="gpt-4o-mini"
    )
    # payments decisions are limited to ada: the suite's reviewer is let in on its own store
    app = keel.App(
        url, llm=model, settings=Settings(poll_interval=0.02), reviewers={"payments": ["ada"]}
    )

    @app.tool
    async def lookup(account: str) -> dict[str, str]:
        return {"account": account, "tier": "pro"}

    @app.tool(irreversible=True, approval=Approval(queue="payments", reason="refunds move money"))
    async def refund(account: str, amount: float) -> str:
        return f"refunded {amount}"

    @app.workflow
    async def support(
        ctx: keel.Context, text: str, account: str, amount: float = 0
    ) -> dict[str, Any]:
        label = await ctx.llm.text(text, name="classify")
        acct = await ctx.call(lookup, account)
        refunded = False
        if label == "billing" and amount:
            try:
                await ctx.call(refund, account, amount)
                refunded = True
            except keel.ApprovalRejected:
                pass
        return {"category": label, "tier": acct["tier"], "refunded": refunded}

    return app, support


CASES = [
    {
        "id": "c1",
        "input": {"text": "please refund me", "account": "a1", "amount": 5.0},
        "expected": {"category": "billing", "refunded": True, "route": "refunded"},
        "tags": ["billing"],
    },
    {
        "id": "c2",
        "input": {"text": "the site is down", "account": "a2"},
        "expected": {"category": "outage", "refunded": False, "route": "none"},
        "tags": ["outage"],
    },
    {
        "id": "c3",
        "input": {"text": "hello there", "account": "a3"},
        "expected": {"category": "billing", "refunded": False, "route": "none"},
        "tags": ["general"],
    },
]


def suite(app: keel.App, wf: Any, **kw: Any) -> evals.Suite:
    kw.setdefault("timeout", WAIT)
    return evals.Suite(
        "support",
        wf,
        CASES,
        scorers=[
            evals.fields("category", "refunded"),
            evals.route({"refunded": "refund", "queued": "queue:payments"}),
            evals.trajectory(["llm:classify", "lookup"], mode="superset", name="trajectory"),
        ],
        app=app,
        **kw,
    )


async def test_a_suite_runs_real_runs_approves_through_the_api_and_stores_results(
    store_url: str,
) -> None:
    app, wf = build(store_url)
    report = await suite(app, wf, thresholds={"fields": 0.5, "fields[outage]": 1.0}).run(
        store=store_url
    )
    by = {r.case.id: r for r in report.results}
    assert by["c1"].scores["fields"].value == 1.0  # approved by the suite: refunded
    assert by["c1"].scores["route"].ok
    assert by["c3"].scores["fields"].value == 0.5  # partial credit: 1 of 2 fields
    assert by["c3"].scores["fields"].reason == "category: 'general' != 'billing'"
    assert report.exit_code == 0 and report.failures == []
    # The approval was decided through app.approvals, by the suite, and audited
    async with keel.App(store_url) as viewer:
        [req] = await viewer.approvals.list(status="all")
        assert (req.status, req.decided_by, req.queue) == ("approved", "keel-eval", "payments")
    store = open_store(store_url)
    try:
        [saved] = await store.list_evals(suite="support")
        assert saved.id == report.eval_id and saved.outcome == "pass"
        cases = await store.eval_cases(saved.id)
        assert [(c.case_id, c.passed) for c in cases] == [("c1", True), ("c2", True), ("c3", False)]
        assert cases[0].run_id == by["c1"].run_id and (await store.get_run(cases[0].run_id))
    finally:
        await store.close()
    await app.close()


async def test_rejecting_or_leaving_approvals_changes_what_is_scored(store_url: str) -> None:
    app, wf = build(store_url)
    rejected = await suite(app, wf, approvals="reject").run()
    c1 = next(r for r in rejected.results if r.case.id == "c1")
    assert c1.status == "succeeded" and c1.scores["fields"].reason == "refunded: False != True"
    left = await suite(app, wf, approvals="leave").run()
    c1 = next(r for r in left.results if r.case.id == "c1")
    assert c1.status == "waiting"  # scored where it stopped: routed to the payments queue
    assert c1.scores["route"].reason == "took 'queued', expected 'refunded'"
    await app.close()


async def test_thresholds_per_tag_fail_with_the_scorer_and_the_cases(store_url: str) -> None:
    app, wf = build(store_url)
    report = await suite(app, wf, thresholds={"fields[general]": 0.9}).run()
    assert report.exit_code == 100
    assert report.failures == [
        "fields[general]: mean 0.500 below threshold 0.900 (failing cases: c3)"
    ]
    assert "<failure" in report.junit() and "c3#0" in report.junit()
    assert "fields[general] >= 0.90 | 0.500 | 1 | FAIL" in report.markdown()
    await app.close()


async def test_repeats_report_pass_hat_k_and_a_baseline_round_trips(
    store_url: str, tmp_path: Path
) -> None:
    app, wf = build(store_url)
    first = await suite(app, wf, repeats=2).run()
    assert len(first.results) == 6 and first.pass_hat_k == pytest.approx(2 / 3)
    assert first.spread["fields"] == 0.0  # a scripted model: every repeat alike
    path = tmp_path / "baseline.json"
    evals.save_baseline(first, path)
    again = await suite(app, wf, repeats=2).run(baseline=path)
    assert [p.delta for p in again.comparison] == [0.0, 0.0, 0.0]
    assert again.exit_code == 0
    evals.save_baseline(again, tmp_path / "again.json")
    assert path.read_bytes() == (tmp_path / "again.json").read_bytes()  # no churn
    await app.close()


async def test_a_scorer_that_raises_is_a_harness_error_naming_it(store_url: str) -> None:
    app, wf = build(store_url)

    async def broken(case: Case, run: EvalRun) -> Score:
        raise KeyError("oops")

    s = evals.Suite("s", wf, CASES[:1], scorers=[broken], app=app, timeout=WAIT)
    with pytest.raises(evals.HarnessError, match=r"scorer 'broken' raised on case 'c1'.*KeyError"):
        await s.run()
    await app.close()


def test_a_suite_refuses_bad_configuration_before_running(store_url: str) -> None:
    app, wf = build(store_url)
    f = evals.fields("category")
    with pytest.raises(ConfigError, match="two scorers are named alike"):
        evals.Suite("s", wf, CASES, scorers=[f, evals.fields("refunded")], app=app)
    with pytest.raises(ConfigError, match="threshold 'nope' names no scorer"):
        evals.Suite("s", wf, CASES, scorers=[f], thresholds={"nope": 0.5}, app=app)
    with pytest.raises(ConfigError, match="approvals='maybe'"):
        evals.Suite("s", wf, CASES, scorers=[f], app=app, approvals="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="is not a scorer"):
        evals.Suite("s", wf, CASES, scorers=[lambda c, r: 1.0], app=app)
    with pytest.raises(ConfigError, match="not a workflow"):
        evals.Suite("s", print, CASES, scorers=[f])


async def test_a_bad_baseline_or_an_unknown_tag_is_a_harness_error(
    store_url: str, tmp_path: Path
) -> None:
    app, wf = build(store_url)
    s = suite(app, wf)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": 1, "suite": "other", "cases": {}}))
    with pytest.raises(
        evals.HarnessError, match=r"baseline .* belongs to suite 'other', not 'support'"
    ):
        await s.run(baseline=other)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(evals.HarnessError, match="cannot read baseline"):
        await s.run(baseline=broken)
    broken.write_text("[]")
    with pytest.raises(evals.HarnessError, match="is not a keel eval baseline"):
        await s.run(baseline=broken)
    typo = suite(app, wf, thresholds={"fields[bilings]": 0.5})
    with pytest.raises(evals.HarnessError, match="tag 'bilings', which no case has"):
        await typo.run()
    await app.close()


# -- datasets -------------------------------------------------------------------------


def test_datasets_load_from_jsonl_lists_and_review_exports(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    exported = {  # a `keel review export` row marked incorrect with no label
        "id": "rev_1",
        "workflow": "wf",
        "run_id": "r1",
        "input": {"x": 1},
        "output": {"y": 2},
        "case": "negative",
        "expected": None,
        "rejected_output": {"y": 2},
        "verdict": "incorrect",
        "reviewer": "ada",
        "note": None,
    }
    path.write_text(json.dumps(CASES[0]) + "\n\n" + json.dumps(exported) + "\n")
    cases = evals.load_dataset(path)
    assert [c.id for c in cases] == ["c1", "rev_1"]
    assert cases[1].rejected == {"y": 2} and cases[1].tags == ["negative"]
    assert evals.load_dataset(CASES)[2].input == {"text": "hello there", "account": "a3"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ('{"id": "a"}\nnot json\n', r"cases.jsonl:2: not JSON"),
        ('{"input": {}}\n', r"cases.jsonl:1: a case needs an \"id\""),
        ('{"id": "a"}\n{"id": "a"}\n', "two cases with id 'a'"),
        ("[1, 2]\n", "a case is a JSON object, got list"),
        ('{"id": "a", "tags": "x"}\n', r"case 'a'\): tags: Input should be a valid list"),
        ("\n", "the dataset has no cases"),
    ],
)
def test_a_bad_dataset_is_refused_naming_the_line(tmp_path: Path, rows: str, message: str) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(rows)
    with pytest.raises(ConfigError, match=message):
        evals.load_dataset(path)
    with pytest.raises(ConfigError, match="no dataset file"):
        evals.load_dataset(tmp_path / "missing.jsonl")


# -- scorers, on journals built by hand ------------------------------------------------


def _step(
    name: str, kind: StepKind, n: int, args: dict[str, Any] | None = None, **out: Any
) -> StepRecord:
    return StepRecord(
        run_id="r",
        key=f"{name}#{n}",
        scope="",
        position=n,
        kind=kind,
        name=name,
        digest="",
        status=StepStatus.OK,
        started_at=float(n),
        input=args,
        output=out or None,
    )


def _run(case: Case, result: Any, steps: list[StepRecord], **kw: Any) -> EvalRun:
    info = RunInfo(
        id="r",
        workflow="wf",
        status=RunStatus.SUCCEEDED,
        input={},
        result=result,
        created_at=0.0,
        updated_at=1.0,
    )
    return EvalRun(case, 0, info, steps, **kw)


STEPS = [
    _step(
        "llm:classify",
        StepKind.LLM,
        0,
        cost_usd=0.002,
        usage={"input_tokens": 90, "output_tokens": 10},
    ),
    _step("lookup", StepKind.TOOL, 1, {"account": "a1"}),
    _step("send", StepKind.TOOL, 2, {"to": "a@x", "body": "hi"}),
]


async def test_fields_give_partial_credit_with_matchers() -> None:
    case = Case(id="c", expected={"total": 10.0, "tags": ["a", "b"], "name": "x", "extra": None})
    run = _run(case, {"total": 10.004, "tags": ["b", "c"], "name": "y"}, [])
    scorer = evals.fields({"total": evals.near(0.01), "tags": evals.same_set(), "name": "exact"})
    got = await scorer(case, run)
    assert got.value == pytest.approx((1 + 1 / 3 + 0) / 3) and not got.ok
    assert "name: 'y' != 'x'" in got.reason
    negative = Case(id="n", rejected={"total": 1})
    assert (await scorer(negative, _run(negative, {"total": 1}, []))).value == 0.0
    assert (await scorer(negative, _run(negative, {"total": 2}, []))).value == 1.0


@pytest.mark.parametrize(
    ("expected", "mode", "ok"),
    [
        (["llm:classify", "lookup", "send"], "strict", True),
        (["lookup", "llm:classify", "send"], "strict", False),
        (["lookup", "llm:classify", "send"], "unordered", True),
        (["lookup", "send"], "superset", True),
        (["lookup", "send"], "subset", False),
        (["llm:classify", "lookup", "send", "escalate"], "subset", True),
        (["llm:classify", "lookup", "send", "escalate"], "superset", False),
        ([{"name": "lookup", "args": {"account": "a2"}}], "superset", False),
        ([{"name": "lookup", "args": {"account": "a1"}}, "send"], "superset", True),
        ([{"name": "send", "args": {"to": "a@x", "body": "other"}}], "superset", False),
    ],
)
async def test_trajectory_modes_and_argument_matchers(
    expected: list[Any], mode: str, ok: bool
) -> None:
    case = Case(id="c")
    got = await evals.trajectory(expected, mode=mode)(case, _run(case, None, STEPS))  # type: ignore[arg-type]
    assert got.ok is ok
    assert got.value == 1.0 if ok else got.value < 1.0  # F1 as partial credit


async def test_trajectory_argument_overrides_and_expected_from_the_case() -> None:
    case = Case(
        id="c", expected={"trajectory": [{"name": "send", "args": {"to": "a@x", "body": "x"}}]}
    )
    lenient = evals.trajectory(mode="superset", args={"send": {"body": evals.ignore()}})
    assert (await lenient(case, _run(case, None, STEPS))).ok
    with pytest.raises(ConfigError, match="trajectory mode 'loose'"):
        evals.trajectory([], mode="loose")  # type: ignore[arg-type]


async def test_route_budget_and_latency_read_the_journal() -> None:
    case = Case(id="c", expected={"route": "escalated"})
    run = _run(case, None, STEPS, queues=["support"], latency=2.0)
    assert (
        await evals.route({"escalated": "queue:support", "sent": "send"})(case, run)
    ).value == 0.0
    assert (await evals.route({"escalated": "queue:support"})(case, run)).ok
    assert (
        await evals.route(["send"], default="x")(case, run)
    ).reason == "took 'send', expected 'escalated'"
    assert run.cost_usd == 0.002 and run.tokens == 100
    assert (await evals.budget(max_cost_usd=0.01, max_tokens=100)(case, run)).ok
    over = await evals.budget(max_tokens=99)(case, run)
    assert over.reason == "100 tokens > 99" and not over.ok
    assert not (await evals.latency(1.0)(case, run)).ok


async def test_a_judge_scores_through_the_gateway(store_url: str) -> None:
    app, _ = build(store_url)
    answers = keel.llm.ScriptedModel(
        rules=[("billing", '{"score": 0.8, "reason": "polite"}')], default="no idea"
    )
    judge = evals.judge("Is the answer polite?", gateway=answers)
    case = Case(id="c", input={"text": "billing"}, expected={"category": "billing"})
    run = _run(case, {"category": "billing"}, [], app=app)
    got = await judge(case, run)
    assert (got.value, got.ok, got.reason) == (0.8, True, "polite")
    assert "Is the answer polite?" in answers.calls[-1]["messages"][0]["content"]
    other = Case(id="d", input={"text": "x"})
    with pytest.raises(ConfigError, match='not JSON with a numeric "score"'):
        await judge(other, _run(other, {}, [], app=app))
    await app.close()


# -- the paired test ---------------------------------------------------------------


def test_paired_bootstrap_flags_only_a_significant_drop() -> None:
    base = {f"c{i}": [1.0] for i in range(40)}
    same = evals.paired("s", base, base)
    assert same is not None and (same.delta, same.low, same.high, same.regressed) == (
        0,
        0,
        0,
        False,
    )
    one_worse = {**base, "c0": [0.0]}
    small = evals.paired("s", one_worse, base)
    assert small is not None and not small.regressed and small.low < 0  # one case: noise
    drop = {k: [0.0 if i < 10 else 1.0] for i, k in enumerate(base)}
    big = evals.paired("s", drop, base)
    assert big is not None and big.regressed and big.delta == -0.25 and big.high < 0
    assert big.mde > 0 and evals.paired("s", drop, base) == big  # seeded: same interval
    assert evals.paired("s", {"x": [1.0]}, base) is None  # no case in common


def test_repeats_are_clustered_by_case() -> None:
    base = {f"c{i}": [1.0, 1.0, 1.0] for i in range(10)}
    # one case failing all three repeats is one case's change, not three independent ones
    cur = {**base, "c0": [0.0, 0.0, 0.0]}
    got = evals.paired("s", cur, base)
    assert got is not None and got.n == 10 and got.delta == pytest.approx(-0.1)
    assert not got.regressed


async def test_a_judge_replays_its_verdicts_from_a_cassette(store_url: str, tmp_path: Path) -> None:
    """Recorded once (here LiteLLM's own gpt-4o-mini path with a mock response stands in
    for the provider), then replayed offline with no mock: the same score and reason."""
    app, _ = build(store_url)
    path = tmp_path / "judge.jsonl"
    verdict = '{"score": 0.9, "reason": "names the next step"}'
    recording = keel.llm.Gateway(
        {"judge": keel.llm.ModelSpec("openai/gpt-4o-mini", params={"mock_response": verdict})},
        cassette=keel.llm.Cassette(path, mode="record"),
    )
    case = Case(id="c", input={"text": "refund"}, expected={"category": "billing"})
    run = _run(case, {"category": "billing"}, [], app=app)
    rubric = "Does the answer name the next step?"
    recorded = await evals.judge(rubric, model="judge", gateway=recording)(case, run)
    replaying = keel.llm.Gateway(
        {"judge": "openai/gpt-4o-mini"}, cassette=keel.llm.Cassette(path, mode="replay")
    )
    replayed = await evals.judge(rubric, model="judge", gateway=replaying)(case, run)
    assert replayed == recorded == Score(value=0.9, passed=True, reason="names the next step")
    other = _run(case, {"category": "general"}, [], app=app)  # never recorded: a miss
    with pytest.raises(keel.CassetteMiss):
        await evals.judge(rubric, model="judge", gateway=replaying)(case, other)
    await app.close()


async def test_keel_review_export_output_is_a_dataset(store_url: str, tmp_path: Path) -> None:
    """Sampled runs a person judged, exported as `keel review export` writes them, run
    again as a suite: the run judged correct passes, the one a reviewer relabelled fails
    until the workflow gives the reviewer's answer."""
    from keel.hitl import Sample
    from tests.services.pages import sample_of

    app = keel.App(
        store_url,
        settings=Settings(poll_interval=0.02),
        llm=keel.llm.ScriptedModel(rules=[("refund", "billing")], default="general"),
    )

    @app.workflow(sample=Sample(rate=1.0, queue="qa"))
    async def label(ctx: keel.Context, text: str) -> dict[str, str]:
        return {"category": await ctx.llm.text(text, name="classify")}

    for run_id, text in (("r-ok", "refund please"), ("r-wrong", "charged twice")):
        await (await app.start(label, {"text": text}, id=run_id)).result(WAIT)
    await app.reviews.verdict((await sample_of(app, "r-ok")).id, True, by="ada")
    wrong = (await sample_of(app, "r-wrong")).id
    await app.reviews.verdict(wrong, False, by="ada", label={"category": "billing"})
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in await app.reviews.export("label")))
    report = await evals.Suite(
        "label", label, path, scorers=[evals.fields("category")], app=app, timeout=WAIT
    ).run()
    passed = {r.case.input["text"]: r.passed for r in report.results}
    assert passed == {"refund please": True, "charged twice": False}
    await app.close()


async def test_a_suite_runs_offline_from_a_recorded_cassette(
    store_url: str, tmp_path: Path
) -> None:
    """Record the cases' model calls once (LiteLLM's gpt-4o-mini path with a mock response
    stands in for the provider), then run the suite again from the cassette alone."""
    path = tmp_path / "cases.jsonl"

    def app_with(spec: Any, mode: str) -> tuple[keel.App, Any]:
        gateway = keel.llm.Gateway({"m": spec}, cassette=keel.llm.Cassette(path, mode=mode))  # type: ignore[arg-type]
        app = keel.App(store_url, llm=gateway, settings=Settings(poll_interval=0.02))

        @app.workflow
        async def label(ctx: keel.Context, text: str) -> dict[str, str]:
            return {"category": await ctx.llm.text(text, name="classify")}

        return app, label

    texts = [{**c, "input": {"text": c["input"]["text"]}} for c in CASES]
    reports = []
    for spec, mode in (
        (keel.llm.ModelSpec("openai/gpt-4o-mini", params={"mock_response": "billing"}), "record"),
        ("openai/gpt-4o-mini", "replay"),  # no mock: only the cassette can answer
    ):
        app, wf = app_with(spec, mode)
        s = evals.Suite(
            "label", wf, texts, scorers=[evals.fields("category")], app=app, timeout=WAIT
        )
        reports.append(await s.run())
        await app.close()
    recorded, replayed = (
        [(r.case.id, r.status, r.scores["fields"].value) for r in rep.results] for rep in reports
    )
    assert (
        replayed
        == recorded
        == [("c1", "succeeded", 1.0), ("c2", "succeeded", 0.0), ("c3", "succeeded", 1.0)]
    )
