"""Content-addressed blobs saved on their own (`JournalStore.save_blob`): what Temporal's
claim check keeps out of a workflow history. Saved once, read back byte for byte, sealed
when the store encrypts, and purged with the run their key names."""

from __future__ import annotations

import hashlib

import pytest

from keel.codec import AESGCMCodec, new_key
from keel.errors import RunNotFound
from keel.store import Store, open_store
from keel.store.records import PurgeScope
from tests.store.kit import claimed, finish

DATA = bytes(range(256)) * 4096  # 1 MiB, not UTF-8: blobs are bytes


def _key(run_id: str, data: bytes = DATA) -> str:
    return f"claim:{run_id}:{hashlib.sha256(data).hexdigest()}"


async def test_a_saved_blob_reads_back_and_saving_it_again_changes_nothing(store: Store) -> None:
    key = _key("r1")
    await store.save_blob(key, DATA)
    await store.save_blob(key, DATA)  # a replaying worker saves it again: harmless
    assert await store.load_blob(key) == DATA
    missing = _key("r1", b"never saved")
    with pytest.raises(RunNotFound, match=missing):
        await store.load_blob(missing)


async def test_a_saved_blob_is_sealed_when_the_store_encrypts(store_url: str) -> None:
    key = _key("r1")
    sealed = open_store(store_url, AESGCMCodec.from_text(new_key()))
    try:
        await sealed.save_blob(key, DATA)
        assert await sealed.load_blob(key) == DATA
    finally:
        await sealed.close()
    clear = open_store(store_url)
    try:  # read without the key: refused, so it was not stored in clear
        with pytest.raises(Exception, match="encrypted"):
            await clear.load_blob(key)
    finally:
        await clear.close()


async def test_claim_blobs_go_with_the_run_their_key_names(store: Store) -> None:
    for rid in ("old", "old-2"):  # "old-2" starts like "old": it must not be taken with it
        await claimed(store, rid)
        await store.save_blob(_key(rid), DATA)
    await finish(store, "old", "A")
    orphan = _key("", b"no run")  # written without a run id: kept
    await store.save_blob(orphan, b"no run")
    scope = PurgeScope(ended_before=await store.now() + 60)
    dry = await store.count_purge(scope, await store.now())
    done = await store.purge_runs(scope)
    assert (done.runs, done.blobs, dry.blobs) == (1, 1, 1)
    with pytest.raises(RunNotFound):
        await store.load_blob(_key("old"))
    assert await store.load_blob(_key("old-2")) == DATA
    assert await store.load_blob(orphan) == b"no run"
