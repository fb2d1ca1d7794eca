"""What the SQLite file itself holds and enforces: columns downstream tools read, the
audit table's append-only triggers, schema upgrades of old files, and many processes
opening a new file at once."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keel.store import Store, UnitOfWork, open_store
from keel.store._sqlite_schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from keel.store.sqlite import SQLiteStore
from keel.types import ReviewRequest, RunStatus, StructuredError
from tests.limits import WAIT

T0 = 1_000_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/keel.db")
    yield s
    await s.close()


def _file(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "keel.db")


async def test_a_failed_runs_error_column_holds_its_json(store: Store, tmp_path: Path) -> None:
    """Downstream systems read runs.error: the run's StructuredError as JSON."""
    err = StructuredError(
        type="ConnectionError",
        message="cannot reach api.example.com",
        step="charge#0",
        fallback="fail",
        attempts=3,
        data={"tool": "charge"},
    )
    await store.create_run("r1", "wf", b"{}", T0)
    assert [c.run.id for c in await store.claim("w", 30, 1, ["wf"])] == ["r1"]
    await store.finish_run("r1", "w", RunStatus.FAILED, None, err, None, [], T0 + 1)
    db = _file(tmp_path)
    try:
        (raw,) = db.execute("SELECT error FROM runs WHERE id='r1'").fetchone()
    finally:
        db.close()
    assert StructuredError.model_validate_json(raw) == err
    assert json.loads(raw)["fallback"] == "fail" and json.loads(raw)["attempts"] == 3


async def test_the_audit_table_refuses_updates_and_deletes(store: Store, tmp_path: Path) -> None:
    review = ReviewRequest(
        id="r1:approval:pay#0",
        kind="approval",
        run_id="r1",
        workflow="wf",
        step="pay#0",
        queue="payments",
        status="pending",
        request={"action": {"tool": "pay", "args": {}}},
        created_at=T0,
    )
    await store.create_run("r1", "wf", b"{}", T0)
    await store.commit(UnitOfWork("r1", None, reviews=[review]))
    await store.decide_review(review.id, "approved", {"note": "fine"}, "alice", T0 + 1, None)
    db = _file(tmp_path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE audit SET actor='mallory'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM audit")
        db.rollback()
        target = (review.id,)
        assert db.execute("SELECT count(*) FROM audit WHERE target=?", target).fetchone() == (2,)
        assert db.execute("SELECT count(*) FROM audit WHERE actor='mallory'").fetchone() == (0,)
    finally:
        db.close()
    assert [e.actor for e in await store.audit_log(review.id)] == ["keel", "alice"]


async def test_a_v12_store_gains_the_workers_table_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "keel.db"
    db = sqlite3.connect(path)
    db.executescript(
        SCHEMA + "".join(MIGRATIONS[v] for v in range(2, 13)) + "PRAGMA user_version=12;"
    )
    db.execute(
        "INSERT INTO runs (id, workflow, status, input, created_at, updated_at)"
        " VALUES ('old', 'wf', 'WAITING', '{}', 1, 1)"
    )
    db.commit()
    db.close()
    store = SQLiteStore(f"sqlite:///{path}")
    try:
        assert (await store.get_run("old")) is not None
        assert await store.list_workers() == []
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    cols = [r[1] for r in db.execute("PRAGMA table_info(workers)")]
    assert cols == [
        "owner",
        "host",
        "pid",
        "workflows",
        "embedded",
        "started_at",
        "seen_at",
        "beat_every",
    ]
    db.close()


STORES = 3  # new stores, each opened by 3 processes at once
_OPEN_STORE = """
import os, sys, time
from keel.store.sqlite import SQLiteStore
db, ready, go = sys.argv[1:]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.0005)
SQLiteStore("sqlite:///" + db)
"""


async def test_workers_starting_together_on_a_new_store_all_open_it(tmp_path: Path) -> None:
    """Every worker that starts on a new store races to switch it to WAL and to upgrade
    its schema (v2 added the recovery columns and tables); none may die of it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    go = tmp_path / "go"
    procs, readies = [], []
    for store in range(STORES):
        for n in range(3):
            ready = tmp_path / f"ready-{store}-{n}"
            readies.append(ready)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        _OPEN_STORE,
                        str(tmp_path / f"{store}.db"),
                        str(ready),
                        str(go),
                    ],
                    env=env,
                    stderr=subprocess.PIPE,
                )
            )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not all(r.exists() for r in readies):
            assert loop.time() < deadline and all(p.poll() is None for p in procs)
            await asyncio.sleep(0.01)
        go.touch()  # all at once
        errors = [p.communicate(timeout=WAIT)[1].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * len(procs), [e for e in errors if e][:1]
    for store in range(STORES):
        db = sqlite3.connect(tmp_path / f"{store}.db")
        try:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            assert version == SCHEMA_VERSION
            assert db.execute("SELECT count(*) FROM escalations").fetchone() == (0,)
        finally:
            db.close()
