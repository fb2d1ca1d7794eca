"""`SessionStateStore` conformance on every store backend: conditions, receipts, expiry on
the database clock and its purge. (The same calls on Redis, and through `ctx.session`,
are in tests/test_memory_session.py.)"""

from __future__ import annotations

import asyncio

from keel.store import PurgeScope, Store
from keel.store.session_state import RECEIPT_PREFIX
from tests.limits import WAIT


async def test_conditions_and_versions(store: Store) -> None:
    assert await store.session_get("s", "k") is None
    assert await store.session_write("s", "k", '"a"', writer="w1", expect=None)
    assert not await store.session_write("s", "k", '"b"', writer="w2", expect=None)
    assert not await store.session_write("s", "k", '"b"', writer="w2", expect="w0")
    assert await store.session_write("s", "k", '"b"', writer="w2", expect="w1")
    entry = await store.session_get("s", "k")
    assert entry is not None and (entry.value, entry.writer, entry.version) == ('"b"', "w2", 2)
    assert await store.session_get("other", "k") is None  # sessions are apart
    assert await store.session_write("s", "k", None, writer="w3")
    assert not await store.session_write("s", "k", None, writer="w4")  # nothing to delete
    assert await store.session_get("s", "k") is None
    assert await store.session_write("s", "k", None, writer="w3")  # re-executed: applied
    # Receipts are no value a reader sees under a user key.
    assert await store.session_get("s", RECEIPT_PREFIX + "w1") is not None


async def test_expiry_is_on_the_store_clock_and_purged(store: Store) -> None:
    assert await store.session_write("s", "short", "1", writer="w1", ttl=0.001)
    assert await store.session_write("s", "long", "2", writer="w2", ttl=3600.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while await store.session_get("s", "short") is not None:
        assert loop.time() < deadline, "a 1 ms value never expired"
        await asyncio.sleep(0.01)
    # Expired reads as absent: only-if-absent may take it over.
    assert await store.session_write("s", "short", "3", writer="w3", ttl=0.001, expect=None)
    while await store.session_get("s", "short") is not None:
        assert loop.time() < deadline, "a 1 ms value never expired"
        await asyncio.sleep(0.01)
    now = await store.now()
    scope = PurgeScope(ended_before=0.0)
    assert (await store.count_purge(scope, now)).sessions == 1
    assert (await store.purge_expired(scope, now)).sessions == 1
    entry = await store.session_get("s", "long")
    assert entry is not None and entry.value == "2"
