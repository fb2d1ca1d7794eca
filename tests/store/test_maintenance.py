"""MaintenanceStore conformance: purges remove only ended runs of their scope with
everything that is theirs, a dry count agrees with the purge, expired cache entries and
old sampler counters go, and rekeying seals every payload under the current key."""

from __future__ import annotations

import hashlib

import pytest

from keel.codec import AESGCMCodec, new_key
from keel.errors import ConfigError
from keel.store import Store, open_store
from keel.store.records import Purged, PurgeScope, StepWrite
from keel.types import RunStatus, StepKind
from tests.store.kit import claimed, commit, create, finish, journal, rec, step, usage
from tests.store.people_kit import escalation, review

BLOB = b'"' + b"b" * 10_000 + b'"'
DIGEST = hashlib.sha256(BLOB).hexdigest()


async def _ended(store: Store, run_id: str, workflow: str = "wf", shared: bool = True) -> None:
    """An ended run with a step, a metered step, a blob, a review and an escalation."""
    await claimed(store, run_id, workflow=workflow)
    await commit(
        store,
        run_id,
        "A",
        step(run_id, "a#0", 0),
        step(run_id, "llm#0", 1, usage=usage(0.5), kind=StepKind.LLM),
        StepWrite(rec(run_id, "big#0", 2, blob=DIGEST if shared else run_id), None, BLOB),
        reviews=[review(f"rv-{run_id}", run_id, workflow=workflow)],
        escalations=[escalation(f"es-{run_id}", run_id)],
    )
    await finish(store, run_id, "A")


async def test_a_purge_takes_ended_runs_of_its_scope_with_all_that_is_theirs(
    store: Store,
) -> None:
    await _ended(store, "old")
    await _ended(store, "keep-other-wf", workflow="other")
    await claimed(store, "live")  # RUNNING: never purged
    await create(store, "pending")
    spent = await store.spent(workflow="wf", since=0.0)  # whole days, from a midnight
    scope = PurgeScope(ended_before=await store.now() + 60, workflow="wf")
    dry = await store.count_purge(scope, await store.now())
    done = await store.purge_runs(scope)
    assert (done.runs, done.steps, done.reviews, done.escalations, done.usage) == (1, 3, 1, 1, 1)
    assert done.blobs == 0  # still used by the other workflow's run
    assert dry.runs == done.runs and dry.steps == done.steps and dry.reviews == done.reviews
    assert await store.get_run("old") is None
    assert await store.load_steps("old") == []
    assert await store.get_review("rv-old") is None
    assert await store.get_escalation("es-old") is None
    for kept in ("keep-other-wf", "live", "pending"):
        assert await store.get_run(kept) is not None
    assert await store.load_blob(DIGEST) == BLOB
    assert len(await journal(store, "keep-other-wf")) == 3
    assert (await store.purge_runs(scope)).runs == 0
    # the purged run's usage is folded into per-day totals, not lost
    assert spent == pytest.approx(0.5)
    assert await store.spent(workflow="wf", since=0.0) == pytest.approx(spent)


async def test_a_purge_respects_its_cutoff_statuses_and_limit(store: Store) -> None:
    for i in range(3):
        await _ended(store, f"r{i}", shared=False)
    await claimed(store, "failed")
    await finish(store, "failed", "A", RunStatus.FAILED, None)
    assert (await store.purge_runs(PurgeScope(ended_before=0.0))).runs == 0
    later = await store.now() + 60
    only_failed = PurgeScope(ended_before=later, statuses=(RunStatus.FAILED,))
    assert (await store.purge_runs(only_failed)).runs == 1
    batch = await store.purge_runs(PurgeScope(ended_before=later), limit=2)
    assert (batch.runs, batch.blobs) == (2, 2)
    assert (await store.purge_runs(PurgeScope(ended_before=later), limit=2)).runs == 1
    with pytest.raises(ConfigError, match="only ended runs can be purged"):
        PurgeScope(ended_before=later, statuses=(RunStatus.RUNNING,))


async def test_purge_expired_takes_cache_entries_and_old_sampler_counts(store: Store) -> None:
    await store.cache_put("old", "v", expires_at=10.0)
    await store.cache_put("new", "v", expires_at=1e12)
    await store.count_sample("wf", "2000-01-01")
    await store.count_sample("wf", "2999-01-01")
    scope = PurgeScope(ended_before=946_771_200.0)  # 2000-01-02
    dry = await store.count_purge(scope, 100.0)
    assert (dry.cache, dry.sample_counts) == (1, 1)
    done = await store.purge_expired(scope, 100.0)
    assert (done.cache, done.sample_counts) == (1, 1)
    assert await store.cache_get("new", 100.0) == "v"
    assert await store.count_sample("wf", "2000-01-01") == 1  # counting starts again
    assert await store.count_sample("wf", "2999-01-01") == 2


async def test_purged_counts_add_up() -> None:
    total = Purged()
    total.add(Purged(runs=1, steps=2))
    total.add(Purged(runs=2, cache=1))
    assert (total.runs, total.steps, total.cache) == (3, 2, 1)


async def test_rekey_seals_every_payload_under_the_current_key(
    store: Store, store_url: str
) -> None:
    await _ended(store, "r1")
    clear = await store.payload_keys()
    assert set(clear) == {None}
    with pytest.raises(ConfigError):
        await store.rekey()
    await store.close()
    codec = AESGCMCodec.from_text(new_key())
    sealed = open_store(store_url, codec)
    try:
        done = await sealed.rekey()
        assert done.sealed == clear[None] and done.rekeyed == 0
        assert await sealed.payload_keys() == {codec.key_id: clear[None]}
        assert len(await journal(sealed, "r1")) == 3
        assert await sealed.load_blob(DIGEST) == BLOB
        again = await sealed.rekey()
        assert (again.sealed, again.rekeyed, again.current) == (0, 0, clear[None])
    finally:
        await sealed.close()
