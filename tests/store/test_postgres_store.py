"""What is the Postgres backend's own (the rest is the conformance suite): hosts creating
the schema at once, the extra's install hint, and calls that never block the loop."""

from __future__ import annotations

import asyncio
import builtins
import sys
import threading
from typing import Any

import pytest

from keel.errors import ConfigError, StoreError
from keel.store import open_store
from tests.services import postgres as service


def test_several_hosts_creating_the_schema_at_once() -> None:
    url = service.fresh_database()
    opened: list[Any] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(open_store(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for store in opened:
        asyncio.run(store.close())
    assert len(opened) == 4


def test_without_psycopg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_psycopg(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in ("psycopg", "psycopg_pool"):
            raise ImportError(f"No module named {name!r}", name=name.split(".")[0])
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "keel.store.postgres", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    with pytest.raises(ConfigError, match=r"pip install 'keel\[postgres\]'"):
        open_store("postgresql://nobody@127.0.0.1:1/none")


def test_an_unreachable_server_is_a_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    srv = service.server()
    url = f"postgresql://postgres@127.0.0.1:{srv.port}/no_such_database"
    with pytest.raises(StoreError, match="no_such_database"):
        open_store(url)


async def test_calls_run_off_the_event_loop() -> None:
    store = open_store(service.fresh_database())
    try:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        await store.now()
        ticker.cancel()
        assert ticks > 0  # the loop ran while the statement was in a worker thread
    finally:
        await store.close()


def test_a_fault_message_hides_the_password() -> None:
    srv = service.server()
    url = f"postgresql://postgres:hunter2-secret@127.0.0.1:{srv.port}/no_such_database"
    with pytest.raises(StoreError) as caught:
        open_store(url)
    shown = f"{caught.value} {caught.value.data}"
    assert "hunter2-secret" not in shown and "no_such_database" in shown
