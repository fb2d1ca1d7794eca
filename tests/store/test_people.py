"""PeopleStore conformance: reviews open once and are decided once, requeue and
resampling, escalations resolve once and wake their run, and the audit log."""

from __future__ import annotations

import pytest

from keel.errors import Conflict, RunNotFound
from keel.store import Store
from keel.store.records import AuditEntry
from keel.types import ReviewRequest, RunStatus
from tests.store.kit import claim, claimed, commit, create, status, suspend
from tests.store.people_kit import escalation, review


async def _open(store: Store, *reviews: ReviewRequest) -> frozenset[str]:
    return (await commit(store, reviews[0].run_id, "A", reviews=list(reviews))).opened


async def test_a_review_opens_once_and_reads_back(store: Store) -> None:
    await claimed(store)
    req = review("rv1", "r1", deadline=5_000.0)
    assert await _open(store, req) == {"rv1"}
    assert await _open(store, req.model_copy(update={"queue": "other"})) == frozenset()
    got = await store.get_review("rv1")
    assert isinstance(got, ReviewRequest)
    assert got == req  # nothing changed by the second open
    assert got.tool == "refund" and got.args == {"amount": 5}
    assert await store.get_review("missing") is None
    assert [e.action for e in await store.audit_log("rv1")] == ["requested"]


async def test_reviews_are_listed_and_counted_by_filter(store: Store) -> None:
    await claimed(store, "r1")
    await claimed(store, "r2")
    await _open(store, review("a", "r1", created_at=1.0), review("b", "r1", created_at=2.0))
    await _open(store, review("c", "r2", kind="novelty", queue="ops", created_at=3.0))
    assert [r.id for r in await store.list_reviews()] == ["a", "b", "c"]  # oldest first
    assert [r.id for r in await store.list_reviews("novelty")] == ["c"]
    assert [r.id for r in await store.list_reviews(queue="payments")] == ["a", "b"]
    assert [r.id for r in await store.list_reviews(run_id="r2")] == ["c"]
    assert [r.id for r in await store.list_reviews(limit=1)] == ["a"]
    assert await store.count_reviews(["approval", "novelty"], "pending", "payments") == 2
    assert await store.count_reviews(["approval"], "pending", "ops") == 0


async def test_a_review_is_decided_once_and_wakes_its_run(store: Store) -> None:
    await claimed(store)
    await _open(store, review("rv1", "r1"))
    await suspend(store, "r1", "A", waiting_on=["review:rv1"])
    decided = await store.decide_review(
        "rv1", "approved", {"note": "ok"}, "alice", 2_000.0, "review:rv1"
    )
    assert (decided.status, decided.decided_by, decided.decided_at) == (
        "approved",
        "alice",
        2_000.0,
    )
    assert decided.decision is not None and decided.decision["note"] == "ok"
    assert await store.get_review("rv1") == decided
    assert await status(store, "r1") is RunStatus.PENDING
    with pytest.raises(Conflict, match="already approved by alice"):
        await store.decide_review("rv1", "rejected", {}, "bob", 2_001.0, "review:rv1")
    with pytest.raises(RunNotFound):
        await store.decide_review("missing", "approved", {}, "bob", 2_001.0, None)
    assert [c for c in await claim(store, "B")] == ["r1"]
    taken = await store.take_signal("r1", "B", "review:rv1", _signal_step("r1", "review:rv1"), [])
    assert taken is not None and b"alice" in taken
    log = await store.audit_log("rv1")
    assert all(isinstance(e, AuditEntry) for e in log)
    assert [(e.action, e.actor) for e in log] == [("requested", "keel"), ("approved", "alice")]


def _signal_step(run_id: str, name: str):  # type: ignore[no-untyped-def]
    from keel.store.records import StepWrite
    from keel.types import StepKind
    from tests.store.kit import rec

    return StepWrite(rec(run_id, f"signal:{name}#0", kind=StepKind.SIGNAL))


async def test_the_audit_log_keeps_no_payload_of_a_decision(store: Store) -> None:
    await claimed(store)
    await _open(store, review("rv1", "r1"))
    await store.decide_review(
        "rv1", "approved", {"args": {"amount": 7}, "original": {"amount": 5}}, "al", 1.0, None
    )
    (_, decided) = await store.audit_log("rv1")
    assert decided.detail == {"fields": ["args", "original"], "changed": ["amount"]}


async def test_requeue_moves_only_a_pending_review(store: Store) -> None:
    await claimed(store)
    await _open(store, review("rv1", "r1", deadline=10.0))
    assert await store.requeue_review("rv1", "managers", 20.0, 11.0)
    got = await store.get_review("rv1")
    assert got is not None and (got.queue, got.deadline) == ("managers", 20.0)
    await store.decide_review("rv1", "rejected", {}, "m", 12.0, None)
    assert not await store.requeue_review("rv1", "x", None, 13.0)
    assert [e.action for e in await store.audit_log("rv1")] == [
        "requested",
        "escalated",
        "rejected",
    ]


async def test_replace_swaps_a_pending_sample(store: Store) -> None:
    await create(store, "r1")
    await commit(store, "r1", None, reviews=[review("s1", "r1", kind="sample")])
    assert await store.replace_review("s1", review("s2", "r1", kind="sample"), 5.0)
    assert await store.get_review("s1") is None
    assert (await store.get_review("s2")) is not None
    assert not await store.replace_review("s1", review("s3", "r1", kind="sample"), 6.0)
    assert await store.get_review("s3") is None


async def test_sample_counts_go_up_per_workflow_and_day(store: Store) -> None:
    assert [await store.count_sample("wf", "2026-01-01") for _ in range(3)] == [1, 2, 3]
    assert await store.count_sample("wf", "2026-01-02") == 1
    assert await store.count_sample("other", "2026-01-01") == 1


async def test_an_escalation_resolves_once_and_wakes_its_run(store: Store) -> None:
    await claimed(store)
    esc = escalation("es1", "r1")
    assert (await commit(store, "r1", "A", escalations=[esc])).opened == {"es1"}
    assert await store.get_escalation("es1") == esc
    assert [e.id for e in await store.list_escalations("open")] == ["es1"]
    assert await store.list_escalations(queue="elsewhere") == []
    assert [e.id for e in await store.list_escalations(run_id="r1")] == ["es1"]
    await suspend(store, "r1", "A", waiting_on=["escalation:es1"])
    done = await store.resolve_escalation("es1", "resolved", {"result": 5}, "ops", 3.0)
    assert (done.status, done.resolved_by, done.resolved_at) == ("resolved", "ops", 3.0)
    assert done.resolution is not None and done.resolution["result"] == 5
    assert await store.get_escalation("es1") == done
    assert await status(store, "r1") is RunStatus.PENDING
    with pytest.raises(Conflict, match="already resolved"):
        await store.resolve_escalation("es1", "rejected", {}, "ops", 4.0)
    with pytest.raises(RunNotFound):
        await store.resolve_escalation("missing", "resolved", {}, "ops", 4.0)
    assert await store.list_escalations("open") == []


async def test_escalations_list_newest_first(store: Store) -> None:
    await claimed(store)
    await commit(
        store,
        "r1",
        "A",
        escalations=[
            escalation("old", "r1", created_at=1.0),
            escalation("new", "r1", created_at=2.0),
        ],
    )
    assert [e.id for e in await store.list_escalations()] == ["new", "old"]
    assert [e.id for e in await store.list_escalations(limit=1)] == ["new"]
