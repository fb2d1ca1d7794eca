"""Retention in the SQLite file: a purge leaves no byte of a purged run in the file (free
pages included), a new file shrinks after a purge and an older one after `--vacuum`, an
upgrade scrubs payloads older versions put in the audit log, and an idle purge reads
little (counted in SQLite virtual-machine steps). The runs are tests/test_retention.py's.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keel.engine import retention
from keel.store._sqlite_schema import MIGRATIONS, SCHEMA
from keel.store.records import Purged, PurgeScope
from keel.store.sqlite import SQLiteStore
from keel.types import RunStatus
from tests.backends import fresh_url
from tests.test_retention import (
    CUTOFF,
    NOW,
    RECENT,
    SECRET,
    _big_old_runs,
    _cli,
    _filled,
    _populate,
    _run,
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(fresh_url(tmp_path))
    yield s
    await s.close()


def _no_auto_vacuum(db_path: Path) -> None:
    """Make the store at `db_path` as stores made before schema 14 are: its file never
    shrinks by itself."""
    legacy = sqlite3.connect(db_path, isolation_level=None)
    legacy.execute("PRAGMA auto_vacuum=NONE")
    legacy.execute("VACUUM")
    assert legacy.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    legacy.close()


def _checkpointed(db_path: Path) -> bytes:
    db = sqlite3.connect(db_path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    wal = Path(f"{db_path}-wal")
    return db_path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@pytest.mark.parametrize("shrinks", [True, False], ids=["new-store", "older-store"])
async def test_purged_payloads_are_overwritten_not_left_in_free_pages(
    store: SQLiteStore, tmp_path: Path, shrinks: bool
) -> None:
    db_path = tmp_path / "keel.db"
    if not shrinks:  # freed pages stay in the file: they must hold zeros
        _no_auto_vacuum(db_path)
    assert (await store.reclaim_space()).shrinks is shrinks
    # Many SQLite builds zero deleted content by default, not all: the purge must not
    # rely on it.
    store._db.execute("PRAGMA secure_delete=0")
    await _populate(store)
    ended = ("old-ok", "old-failed", "old-cancelled", "old-other", "recent-ok")
    live = ("old-running", "old-waiting", "old-pending")
    before = _checkpointed(db_path)
    assert all(f"{SECRET}:{r}".encode() in before for r in ended + live)
    blob_tail = SECRET.encode() + b'"'  # PRIVATE's end: a blob only old-ok refers to
    assert blob_tail in before

    await retention.purge(store, PurgeScope(ended_before=NOW), NOW)  # every ended run
    await store.close()

    # Not a byte of the purged runs is left in the file, free pages included; the runs
    # that have not ended keep theirs.
    left = _checkpointed(db_path)
    assert [r for r in ended if f"{SECRET}:{r}".encode() in left] == []
    assert blob_tail not in left
    assert all(f"{SECRET}:{r}".encode() in left for r in live)


async def test_a_new_store_shrinks_after_a_purge(store: SQLiteStore, tmp_path: Path) -> None:
    await _big_old_runs(store)
    db_path = tmp_path / "keel.db"
    _checkpointed(db_path)
    size = db_path.stat().st_size
    assert (await store.reclaim_space()).shrinks

    await retention.purge(store, PurgeScope(ended_before=CUTOFF), NOW)
    space = await store.reclaim_space()
    assert space.free_bytes == 0 and space.size_bytes < size / 4
    _checkpointed(db_path)
    assert db_path.stat().st_size < size / 4


def test_an_older_store_frees_pages_and_vacuum_shrinks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path = tmp_path / "keel.db"
    _filled(tmp_path)
    _no_auto_vacuum(db_path)
    _filled(tmp_path, _big_old_runs)
    _checkpointed(db_path)
    size = db_path.stat().st_size

    code, out, err = _cli(tmp_path, monkeypatch, "runs", "purge", "--older-than", "30d", "--json")
    assert code == 0, err
    space = json.loads(out)["store"]
    assert space["free_bytes"] > size / 2 and not space["shrinks"]  # freed, reused later
    _checkpointed(db_path)
    assert db_path.stat().st_size >= size  # the file itself keeps its size

    code, out, err = _cli(
        tmp_path, monkeypatch, "runs", "purge", "--older-than", "30d", "--vacuum", "--json"
    )
    assert code == 0, err
    space = json.loads(out)["store"]
    assert space["free_bytes"] == 0 and space["shrinks"]  # later purges shrink it
    _checkpointed(db_path)
    assert db_path.stat().st_size < size / 4


async def test_upgrading_scrubs_payloads_earlier_versions_put_in_the_audit_log(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "keel.db"
    v13 = sqlite3.connect(db_path, isolation_level=None)
    script = SCHEMA + "".join(MIGRATIONS[v] for v in range(2, 14))
    v13.executescript(f"BEGIN;{script}PRAGMA user_version=13;COMMIT;")
    rows = [
        ("alice", "edited", "r:approval:pay#0", {"args": {"pin": SECRET}, "note": None}),
        ("bob", "rejected", "r:approval:pay#1", {"reason": SECRET}),
        ("keel", "requested", "r:approval:pay#0", {"kind": "approval", "queue": "payments"}),
    ]
    for actor, action, target, detail in rows:
        v13.execute(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (NOW, actor, action, target, json.dumps(detail)),
        )
    v13.close()

    store = SQLiteStore(f"sqlite:///{db_path}")
    try:
        log = await store.audit_log()
    finally:
        await store.close()
    assert [(e.actor, e.action) for e in log] == [(a, b) for a, b, _, _ in rows]
    assert log[0].detail == {"fields": ["args"], "scrubbed": True}
    assert log[1].detail == {"fields": ["reason"], "scrubbed": True}
    assert log[2].detail == {"kind": "approval", "queue": "payments"}  # no payload: kept
    assert SECRET.encode() not in _checkpointed(db_path)
    db = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET actor='mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit")
    db.close()


async def test_a_purge_with_nothing_to_do_reads_as_little_in_a_big_store(
    store: SQLiteStore,
) -> None:
    """Workers run it every hour: with nothing old enough, it must not scan the runs
    (counted in SQLite virtual-machine steps, not in time)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    async def cost() -> int:
        nonlocal steps
        steps = 0
        store._db.set_progress_handler(count, 10)
        try:
            assert await retention.purge(store, PurgeScope(ended_before=CUTOFF), NOW) == Purged()
        finally:
            store._db.set_progress_handler(None, 10)
        return steps

    await _run(store, "recent-0", RECENT)
    small = await cost()
    for i in range(1, 1500):
        run_id = f"recent-{i}"
        await store.create_run(run_id, "wf", b"{}", RECENT)
        await store.claim("w", 30, 1, ["wf"], ids=[run_id])
        await store.finish_run(run_id, "w", RunStatus.SUCCEEDED, b"1", None, None, [], RECENT)
        await store.cache_put(f"answer-{i}", "answer", NOW + 3600)
    assert await cost() <= small + 2
