"""Sampled review: a uniform sample of completed runs lands in a review queue; verdicts
are stored and exported as eval cases.

Statistical checks are seeded (the sampler hashes the seed with the run id), so they
are deterministic; their bounds are generous (p < 0.001 for a fair sampler).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import keel
from keel.engine.runtime import Settings
from keel.hitl import Sample
from keel.hitl.sampling import Sampler
from tests.limits import WAIT

SETTLE = WAIT  # a bound, never a timing (tests/limits.py)
CHI2_P001 = {9: 27.88, 14: 36.12}  # chi-square critical values at p = 0.001


def chi_square(counts: list[int], expected: float) -> float:
    return sum((c - expected) ** 2 / expected for c in counts)


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[keel.App]:
    app = keel.App(store_url, settings=Settings(poll_interval=0.02))
    yield app
    await app.close()


async def make_runs(app: keel.App, workflow: str, ids: list[str]) -> None:
    """Runs in the store only (the sampler reads their input and result)."""
    now = time.time()
    for i, run_id in enumerate(ids):
        await app.store.create_run(run_id, workflow, b'{"i": %d}' % i, now)


async def pending_samples(app: keel.App, workflow: str) -> list[Any]:
    return await app.reviews.list(workflow=workflow, limit=10_000)


async def test_rate_sampling_is_uniform(app: keel.App) -> None:
    n, rate = 2000, 0.2
    ids = [f"u-{i:04d}" for i in range(n)]
    await make_runs(app, "wf", ids)
    sampler = Sampler(app)
    policy = Sample(rate=rate, seed=7)
    chosen = [i for i, run_id in enumerate(ids) if await sampler.consider(run_id, "wf", policy)]

    # About rate * n in all (sd ~ 18), and spread evenly over the ids (10 blocks of 200).
    assert abs(len(chosen) - rate * n) < 80, len(chosen)
    blocks = Counter(i // 200 for i in chosen)
    stat = chi_square([blocks[b] for b in range(10)], len(chosen) / 10)
    assert stat < CHI2_P001[9], (stat, blocks)
    samples = await pending_samples(app, "wf")
    assert sorted(s.run_id for s in samples) == [ids[i] for i in chosen]
    assert {(s.kind, s.queue, s.status) for s in samples} == {("sample", "review", "pending")}

    # Deterministic per (seed, run): asking again opens nothing new; another seed picks others.
    again = [i for i, run_id in enumerate(ids) if await sampler.consider(run_id, "wf", policy)]
    assert again == [] and len(await pending_samples(app, "wf")) == len(chosen)
    other = Sampler(app)
    await make_runs(app, "wf2", [f"v-{i:04d}" for i in range(n)])
    reseeded = [
        i
        for i in range(n)
        if await other.consider(f"v-{i:04d}", "wf2", Sample(rate=rate, seed=8))
    ]
    overlap = len(set(reseeded) & set(chosen))
    assert overlap < len(chosen) * 0.4  # independent draws share ~rate of their picks


async def test_daily_reservoir_includes_each_run_with_probability_k_over_n(app: keel.App) -> None:
    k, n, seeds = 3, 15, 400
    sampler = Sampler(app)
    included: Counter[int] = Counter()
    for seed in range(seeds):
        workflow = f"wf-{seed}"  # a fresh day's count per seed
        ids = [f"s{seed}-{i:02d}" for i in range(n)]
        await make_runs(app, workflow, ids)
        for run_id in ids:
            await sampler.consider(run_id, workflow, Sample(per_day=k, seed=seed))
        pending = await pending_samples(app, workflow)
        assert len(pending) == k  # never more than k waiting per day
        assert sorted(s.request["slot"] for s in pending) == list(range(k))
        for s in pending:
            included[int(s.run_id.rsplit("-", 1)[1])] += 1

    expected = seeds * k / n  # 80 per position
    counts = [included[i] for i in range(n)]
    assert sum(counts) == seeds * k
    stat = chi_square(counts, expected)
    assert stat < CHI2_P001[14], (stat, counts)
    # In particular the first k (which fill the reservoir) are not favoured over the last k.
    assert abs(sum(counts[:k]) - sum(counts[-k:])) < expected * k * 0.5


async def test_a_reviewed_sample_stays_and_the_day_keeps_at_most_k_pending(
    app: keel.App,
) -> None:
    ids = [f"r-{i:03d}" for i in range(60)]
    await make_runs(app, "wf", ids)
    sampler = Sampler(app)
    policy = Sample(per_day=2, seed=1)
    for run_id in ids[:2]:
        await sampler.consider(run_id, "wf", policy)
    first = await pending_samples(app, "wf")
    assert [s.run_id for s in first] == ids[:2]
    await app.reviews.verdict(first[0].id, correct=True, by="vera")
    for run_id in ids[2:]:
        await sampler.consider(run_id, "wf", policy)
    pending = await pending_samples(app, "wf")
    assert 1 <= len(pending) <= 2
    kept = await app.reviews.get(first[0].id)
    assert kept.status == "correct" and kept.decided_by == "vera"  # never swapped out
    log = await app.store.audit_log()
    assert {e.action for e in log} >= {"requested", "correct", "resampled"}


async def test_completed_runs_are_sampled_then_verdicts_export_as_eval_cases(
    app: keel.App, wait_until: Callable[..., Any]
) -> None:
    @app.workflow(sample=Sample(rate=1.0, queue="qa"))
    async def label(ctx: keel.Context, text: str) -> str:
        if text == "crash":
            raise ValueError("no")
        return "billing" if "refund" in text else "general"

    texts = {"a": "refund please", "b": "hello", "c": "refund twice", "d": "crash"}
    for run_id, text in texts.items():
        handle = await app.start(label, {"text": text}, id=run_id)
        await handle.settle(SETTLE)

    async def three() -> bool:
        return len(await app.reviews.list()) == 3

    await wait_until(three, "three sampled runs")
    samples = {s.run_id: s for s in await app.reviews.list()}
    assert set(samples) == {"a", "b", "c"}  # the failed run is not an autonomous decision
    assert samples["a"].queue == "qa"
    assert samples["a"].request["input"] == {"text": "refund please"}
    assert samples["a"].request["result"] == "billing"
    assert await app.approvals.list() == []  # samples do not gate anything

    await app.reviews.verdict(samples["a"].id, correct=True, by="vera")
    await app.reviews.verdict(
        samples["b"].id, correct=False, by="vera", label="greeting", note="not a ticket"
    )
    with pytest.raises(keel.ConfigError, match="a decision is final"):
        await app.reviews.verdict(samples["a"].id, correct=False, by="vera")
    stored = await app.reviews.get(samples["b"].id)
    assert stored.status == "incorrect" and stored.decided_by == "vera"
    assert stored.decision is not None and stored.decision["label"] == "greeting"
    assert stored.decision["note"] == "not a ticket"
    assert [s.run_id for s in await app.reviews.list()] == ["c"]
    assert {s.run_id for s in await app.reviews.list(status="all")} == {"a", "b", "c"}

    cases = await app.reviews.export()
    assert cases == [
        {
            "id": "a:sample",
            "workflow": "label",
            "run_id": "a",
            "input": {"text": "refund please"},
            "output": "billing",
            "case": "positive",
            "expected": "billing",
            "rejected_output": None,
            "verdict": "correct",
            "reviewer": "vera",
            "note": None,
        },
        {
            "id": "b:sample",
            "workflow": "label",
            "run_id": "b",
            "input": {"text": "hello"},
            "output": "general",
            "case": "positive",
            "expected": "greeting",
            "rejected_output": "general",
            "verdict": "incorrect",
            "reviewer": "vera",
            "note": "not a ticket",
        },
    ]
    assert await app.reviews.export(workflow="other") == []


class Label(BaseModel):
    category: Literal["billing", "general", "greeting"]
    priority: int = 3


async def test_an_unlabelled_wrong_output_exports_as_a_negative_case_and_labels_must_fit(
    app: keel.App, wait_until: Callable[..., Any]
) -> None:
    """The bug: marked incorrect with no label, a run exported `expected` = its own (wrong)
    output, a positive case teaching the mistake. A label that does not fit the
    workflow's output was stored as the expected output."""

    @app.workflow(sample=Sample(rate=1.0, queue="qa"))
    async def classify(ctx: keel.Context, text: str) -> Label:
        return Label(category="billing" if "refund" in text else "general")

    for run_id, text in {"x": "hello", "y": "refund", "z": "hi"}.items():
        await (await app.start(classify, {"text": text}, id=run_id)).result(SETTLE)

    async def three() -> bool:
        return len(await app.reviews.list()) == 3

    await wait_until(three, "three sampled runs")
    sample = await app.reviews.get("x:sample")
    assert sample.request["schema"]["title"] == "Label"  # recorded for checks without the code
    for label, problem in [
        ({"category": "weather"}, "category: must be one of"),
        ({"category": "greeting", "priorty": 1}, "priorty: unknown field"),
        ({"category": "greeting", "priority": "high"}, "priority: expected integer, got str"),
        ("greeting", "(label): expected object, got str"),
    ]:
        with pytest.raises(keel.InputError) as refused:
            await app.reviews.verdict("x:sample", correct=False, by="vera", label=label)
        assert problem in refused.value.message, refused.value.message
        assert refused.value.data["field"] == "label"
    with pytest.raises(keel.InputError, match="marked correct expects its own result"):
        await app.reviews.verdict("y:sample", correct=True, label={"category": "general"})
    assert len(await app.reviews.list()) == 3  # nothing was decided

    await app.reviews.verdict("x:sample", correct=False, by="vera", note="no idea what is right")
    await app.reviews.verdict("y:sample", correct=True, by="vera")
    await app.reviews.verdict("z:sample", correct=False, by="vera", label={"category": "greeting"})
    cases = {c["run_id"]: c for c in await app.reviews.export()}
    wrong = {"category": "general", "priority": 3}
    assert {k: cases["x"][k] for k in ("case", "expected", "rejected_output", "verdict")} == {
        "case": "negative", "expected": None, "rejected_output": wrong, "verdict": "incorrect"
    }
    assert cases["x"]["note"] == "no idea what is right"
    assert (cases["y"]["case"], cases["y"]["expected"], cases["y"]["rejected_output"]) == (
        "positive", {"category": "billing", "priority": 3}, None
    )
    assert (cases["z"]["case"], cases["z"]["expected"], cases["z"]["rejected_output"]) == (
        "positive", {"category": "greeting"}, wrong
    )


async def test_daily_quota_on_a_workflow(app: keel.App, wait_until: Callable[..., Any]) -> None:
    @app.workflow(sample=Sample(per_day=2))
    async def echo(ctx: keel.Context, n: int) -> int:
        return n

    for n in range(8):
        await (await app.start(echo, {"n": n}, id=f"e{n}")).result(SETTLE)
    for part in app._drainable:
        await part.drain()
    pending = await app.reviews.list()
    assert len(pending) == 2
    assert {s.request["result"] for s in pending} <= set(range(8))


    @app.workflow()
    async def ask(ctx: keel.Context) -> None:
        await ctx.approval("x")

    await (await app.start(ask)).settle(SETTLE)
    [req] = await app.approvals.list()
    with pytest.raises(keel.InputError, match="not a sampled review"):
        await app.reviews.verdict(req.id, correct=True)


async def test_new_samples_are_notified(store_url: str) -> None:
    seen: list[dict[str, Any]] = []
    app = keel.App(store_url, settings=Settings(poll_interval=0.02), notify=seen.append)
    try:

        @app.workflow(sample=Sample(rate=1.0))
        async def every(ctx: keel.Context, n: int) -> int:
            return n

        @app.workflow(sample=Sample(per_day=1, seed=3))
        async def daily(ctx: keel.Context, n: int) -> int:
            return n

        # Sampling and notifying run after the run ends: drain after each run so the
        # order of notifications is the order of the runs (on a slow store it may not be).
        async def run(wf: Any, name: str, n: int) -> None:
            await (await app.start(wf, {"n": n}, id=f"{name}-{n}")).result(SETTLE)
            for part in app._drainable:
                await part.drain()

        for n in range(2):
            await run(every, "every", n)
        for n in range(6):
            await run(daily, "daily", n)
        notified = [r["id"] for r in seen]
        assert {r["kind"] for r in seen} == {"sample"}
        assert notified[:2] == ["every-0:sample", "every-1:sample"]
        # The daily reservoir notifies on each sample entering the queue, the current
        # one included (replaced ones were notified when they entered).
        [current] = await app.reviews.list(workflow="daily")
        assert notified[2] == "daily-0:sample" and current.id in notified
        assert len(notified) == len(set(notified)) and len(notified) >= 3
    finally:
        await app.close()
