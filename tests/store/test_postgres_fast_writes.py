"""The Postgres store's one-statement writes (a journal entry under a lease, a run's end):
sent from the event loop with no thread, refused with LeaseLost like the threaded path,
one fault (not one per idle connection) after the server dropped every connection, and
the threaded path on an event loop other than the first."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from keel.errors import LeaseLost, StoreError
from keel.store import Store, open_store
from keel.types import RunStatus
from tests.services import postgres as service
from tests.store.kit import claimed, commit, finish, journal, step


def _no_threads(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every threaded call the store makes from here on."""
    calls: list[str] = []
    real = store._call  # type: ignore[attr-defined]

    async def threaded(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn.__name__)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(store, "_call", threaded)
    return calls


async def test_a_step_and_the_run_end_take_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(service.fresh_database())
    try:
        await claimed(store, "r1")
        calls = _no_threads(store, monkeypatch)
        await commit(store, "r1", "A", step("r1", "a#0"))
        await commit(store, "r1", "A", step("r1", "a#0", output=b"2"))  # rewritten in place
        await finish(store, "r1", "A")
        assert [c for c in calls if c != "_now"] == []  # `finish` asks the store's clock
        # refused: the status is read in a threaded call, and nothing was written
        with pytest.raises(LeaseLost, match="SUCCEEDED"):
            await commit(store, "r1", "A", step("r1", "b#0"))
        with pytest.raises(LeaseLost):
            await finish(store, "r1", "A")
        assert [c for c in calls if c != "_now"] == ["lease_lost", "lease_lost"]
        assert [(s.key, s.output) for s in await journal(store, "r1")] == [("a#0", 2)]
        run = await store.get_run("r1")
        assert run is not None and run.status is RunStatus.SUCCEEDED
    finally:
        await store.close()


async def test_dropped_connections_cost_one_fault() -> None:
    url = service.fresh_database()
    store = open_store(url)
    try:
        await claimed(store, "r1")
        # Several idle connections: writes in flight together.
        await asyncio.gather(*(commit(store, "r1", "A", step("r1", f"a#{i}")) for i in range(4)))
        with psycopg.connect(service.server().url(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (url.rsplit("/", 1)[1],),
            )
        with pytest.raises(StoreError) as caught:
            await commit(store, "r1", "A", step("r1", "b#0"))
        assert caught.value.data["kind"] == "unreachable"
        await commit(store, "r1", "A", step("r1", "b#0"))  # the next one reconnects
    finally:
        await store.close()
    fresh = open_store(url)  # (the threaded calls' pool has dead connections of its own)
    try:
        assert len(await journal(fresh, "r1")) == 5
    finally:
        await fresh.close()


def test_another_event_loop_takes_the_threaded_path() -> None:
    store = open_store(service.fresh_database())

    async def first() -> None:
        await claimed(store, "r1")
        await commit(store, "r1", "A", step("r1", "a#0"))

    async def second() -> None:
        await commit(store, "r1", "A", step("r1", "b#0"))
        await finish(store, "r1", "A")
        assert [s.key for s in await journal(store, "r1")] == ["a#0", "b#0"]
        await store.close()

    asyncio.run(first())
    asyncio.run(second())
