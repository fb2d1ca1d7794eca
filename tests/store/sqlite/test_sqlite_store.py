"""What only the SQLite backend has: exact lease and timer boundaries through its
database-clock override hook, polls that take no write lock, the claim scan, the
daily-cost totals table, JSON deeper than the reader's limit, URLs and schema versions.
The behaviour every backend shares is the conformance suite's (tests/store/test_*.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pydantic_core
import pytest

from keel.errors import ConfigError, RunNotFound, SignalRefused
from keel.store import (
    ConsoleSession,
    RunFilter,
    StepWrite,
    UnitOfWork,
    Usage,
    User,
    open_store,
)
from keel.store._sqlite_schema import SCHEMA_VERSION
from keel.store.sqlite import SQLiteStore
from keel.types import RunStatus, StepKind, StepRecord, StepStatus

T0 = 1_000_000.0
LEASE = 30.0
WF = ["wf"]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path}/keel.db")
    yield s
    await s.close()


def _rec(run_id: str, key: str, pos: int = 0, **kw: Any) -> StepRecord:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "key": key,
        "scope": "",
        "position": pos,
        "kind": StepKind.TOOL,
        "name": key.split("#")[0],
        "digest": "d",
        "status": StepStatus.OK,
        "started_at": T0,
        "ended_at": T0 + 1,
        **kw,
    }
    return StepRecord(**fields)


def _at(store: SQLiteStore, now: float) -> SQLiteStore:
    """Pin the database clock (what leases and timers are measured on) to `now`."""
    store._now_sql = repr(float(now))
    return store


async def _claimed(store: SQLiteStore, run_id: str = "r1", owner: str = "A") -> None:
    await store.create_run(run_id, "wf", b'{"x":1}', T0)
    got = await _at(store, T0).claim(owner, LEASE, 10, WF)
    assert [c.run.id for c in got] == [run_id]


async def test_claim_lease_is_exclusive_between_owners(store: SQLiteStore) -> None:
    await store.create_run("r1", "wf", b"{}", T0)
    a = await _at(store, T0).claim("A", LEASE, 10, WF)
    assert [c.run.id for c in a] == ["r1"]
    assert a[0].run.status is RunStatus.RUNNING
    assert a[0].run.lease_owner == "A"
    assert a[0].resumed is False
    assert await _at(store, T0 + 1).claim("B", LEASE, 10, WF) == []
    assert await _at(store, T0 + 1).claim("A", LEASE, 10, WF) == []  # not twice either
    assert await _at(store, T0 + LEASE - 1).claim("B", LEASE, 10, WF) == []


async def test_renew_extends_only_the_owners_lease(store: SQLiteStore) -> None:
    await _claimed(store)
    assert await _at(store, T0 + 10).renew("B", ["r1"], LEASE) == set()
    assert await _at(store, T0 + 20).renew("A", ["r1", "unknown"], LEASE) == {"r1"}
    # The original lease would have expired at T0 + 30; the renewal holds until T0 + 50.
    assert await _at(store, T0 + 40).claim("B", LEASE, 10, WF) == []
    got = await _at(store, T0 + 51).claim("B", LEASE, 10, WF)
    assert [c.run.id for c in got] == ["r1"]
    assert await _at(store, T0 + 52).renew("A", [], LEASE) == set()


async def test_an_idle_poll_takes_no_write_lock(store: SQLiteStore, tmp_path: Path) -> None:
    await store.create_run("r1", "wf", b"{}", T0)
    await _at(store, T0).claim("A", LEASE, 10, WF)  # r1 now RUNNING under A: nothing is ready
    other = sqlite3.connect(tmp_path / "keel.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        # polls read first and see nothing to do; waiting on the lock would hang here
        assert await _at(store, T0 + 1).claim("B", LEASE, 10, WF) == []
        assert await _at(store, T0 + 1).claim("B", LEASE, 10, WF, ids=["r1", "r9"]) == []
    finally:
        other.execute("ROLLBACK")
        other.close()


async def test_watched_runs_are_claimed_behind_a_backlog_of_others(store: SQLiteStore) -> None:
    from keel.store.sql.runs import _SCAN

    for i in range(_SCAN + 5):  # older ready runs this worker does not watch
        await store.create_run(f"backlog-{i:05d}", "wf", b"{}", T0 + i / 1e6)
    await store.create_run("mine", "wf", b"{}", T0 + 1)
    got = await _at(store, T0 + 2).claim("A", LEASE, 10, WF, ids=["mine", "gone"])
    assert [c.run.id for c in got] == ["mine"]
    got = await _at(store, T0 + 2).claim("A", LEASE, 3, WF)
    assert [c.run.id for c in got] == ["backlog-00000", "backlog-00001", "backlog-00002"]


async def test_suspend_wake_and_signals(store: SQLiteStore) -> None:
    await _claimed(store)
    status = await _at(store, T0 + 1).suspend_run("r1", "A", T0 + 100, ["go"], [], T0 + 1)
    assert status is RunStatus.WAITING
    run = await store.get_run("r1")
    assert run is not None
    assert (run.status, run.wake_at, run.waiting_on, run.lease_owner) == (
        RunStatus.WAITING,
        T0 + 100,
        ["go"],
        None,
    )
    assert await _at(store, T0 + 2).claim("B", LEASE, 10, WF) == []  # not due yet
    await store.send_signal("r1", "other", b"1", T0 + 3)  # not what it waits for
    assert (await store.get_run("r1")).status is RunStatus.WAITING  # type: ignore[union-attr]
    await store.send_signal("r1", "go", b'"yes"', T0 + 4)
    assert (await store.get_run("r1")).status is RunStatus.PENDING  # type: ignore[union-attr]
    got = await _at(store, T0 + 5).claim("B", LEASE, 10, WF)
    assert [c.run.id for c in got] == ["r1"]
    ok = StepWrite(_rec("r1", "signal:go#0", kind=StepKind.SIGNAL))
    assert await store.take_signal("r1", "B", "go", ok, []) == b'"yes"'
    ok2 = StepWrite(_rec("r1", "signal:go#1", 1, kind=StepKind.SIGNAL))
    assert await store.take_signal("r1", "B", "go", ok2, []) is None  # consumed once
    assert {s.key: s.output for s in await store.load_steps("r1")} == {"signal:go#0": "yes"}


async def test_timer_wakes_when_due(store: SQLiteStore) -> None:
    await _claimed(store)
    await _at(store, T0 + 1).suspend_run("r1", "A", T0 + 100, [], [], T0 + 1)
    assert await _at(store, T0 + 99).claim("B", LEASE, 10, WF) == []
    got = await _at(store, T0 + 100).claim("B", LEASE, 10, WF)
    assert [c.run.id for c in got] == ["r1"]
    assert got[0].run.wake_at is None


async def test_finish_cancel_and_terminal_signals(store: SQLiteStore) -> None:
    await _claimed(store)
    await store.finish_run("r1", "A", RunStatus.SUCCEEDED, b'"ok"', None, b'{"n":1}', [], T0 + 1)
    run = await store.get_run("r1")
    assert run is not None
    assert (run.status, run.result, run.state, run.ended_at) == (
        RunStatus.SUCCEEDED,
        "ok",
        {"n": 1},
        T0 + 1,
    )
    with pytest.raises(SignalRefused, match="already SUCCEEDED"):
        await store.send_signal("r1", "go", b"1", T0 + 2)
    assert (await store.cancel_run("r1", T0 + 3)).status is RunStatus.SUCCEEDED  # stays done
    with pytest.raises(RunNotFound):
        await store.cancel_run("missing", T0)
    with pytest.raises(RunNotFound):
        await store.send_signal("missing", "go", b"1", T0)

    await store.create_run("r2", "wf", b"{}", T0)
    assert (await store.cancel_run("r2", T0 + 4)).status is RunStatus.CANCELLED
    assert await _at(store, T0 + 5).claim("A", LEASE, 10, WF) == []


async def test_schema_version_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "keel.db"
    s = SQLiteStore(f"sqlite:///{path}")
    await s.create_run("r1", "wf", b"{}", T0)
    await s.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.execute("PRAGMA user_version=99")
    db.close()
    newer = rf"schema v99, newer than this Keel \(v{SCHEMA_VERSION}\)"
    with pytest.raises(ConfigError, match=newer):
        SQLiteStore(f"sqlite:///{path}")
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE spans DROP COLUMN reconstructed")  # as a v10 store was
    db.executescript(_WITHOUT_V16)
    db.execute("PRAGMA user_version=10")
    db.close()
    reopened = SQLiteStore(f"sqlite:///{path}")  # same version: data kept
    assert (await reopened.get_run("r1")) is not None
    await reopened.close()


async def test_a_v1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    from keel.store._sqlite_schema import SCHEMA

    path = tmp_path / "keel.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA + "PRAGMA user_version=1;")
    db.execute(
        "INSERT INTO runs (id, workflow, status, input, created_at, updated_at)"
        " VALUES ('old', 'wf', 'SUCCEEDED', '{}', 1, 1)"
    )
    db.execute(
        "INSERT INTO steps (run_id, key, scope, position, kind, name, digest, status, output,"
        " attempts, started_at) VALUES ('old', 'a#0', '', 0, 'tool', 'a', 'd', 'ok', '1', 1, 1)"
    )
    db.commit()
    db.close()
    store = SQLiteStore(f"sqlite:///{path}")
    (step,) = await store.load_steps("old")
    assert step.output == 1 and step.fallback is None
    assert (await store.get_run("old")) is not None
    assert await store.list_escalations() == []
    await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()


def test_bad_sqlite_urls() -> None:
    with pytest.raises(ConfigError, match="bad SQLite URL"):
        open_store("sqlite://relative.db")
    with pytest.raises(ConfigError, match="no file path"):
        open_store("sqlite:///")
    with pytest.raises(ConfigError, match="unsupported store URL"):
        open_store("mysql://x")


# -- console users and sessions: schema upgrades ------------------------------------


def _user(name: str, role: str = "reviewer", token_id: str = "") -> User:
    return User(
        name=name,
        role=role,
        token_id=token_id or f"{name:0<16}"[:16],
        token_hash=f"sha256$salt${name}",
        groups=("payments",),
        created_at=T0,
    )


def _session(id_hash: str, user: str, expires_at: float = T0 + 100) -> ConsoleSession:
    return ConsoleSession(
        id_hash=id_hash,
        user=user,
        csrf=f"csrf-{id_hash}",
        client="10.0.0.1",
        created_at=T0,
        expires_at=expires_at,
    )


async def test_a_v9_store_gains_sessions_and_keeps_its_users(tmp_path: Path) -> None:
    from keel.store._sqlite_schema import MIGRATIONS, SCHEMA

    path = tmp_path / "keel.db"
    db = sqlite3.connect(path)
    db.executescript(
        SCHEMA + "".join(MIGRATIONS[v] for v in range(2, 10)) + "PRAGMA user_version=9;"
    )
    db.execute(
        "INSERT INTO users (name, role, token_id, token_hash, groups, created_at)"
        " VALUES ('ada', 'admin', 'ffffffffffffffff', 'sha256$s$d', '[]', 1)"
    )
    db.commit()
    db.close()
    store = SQLiteStore(f"sqlite:///{path}")
    ada = await store.get_user("ada")
    assert ada is not None and ada.role == "admin"
    await store.create_session(_session("a1", "ada"))
    session = await store.get_session("a1", T0)
    assert session is not None and session.role == "admin"
    await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()


def _metered(run_id: str, key: str, cost: float, at: float) -> StepWrite:
    rec = _rec(run_id, key, kind=StepKind.LLM, started_at=at, ended_at=at)
    return StepWrite(rec, b'"ok"', usage=Usage("m", 1, 1, cost))


async def test_daily_cost_totals_follow_every_usage_write(store: SQLiteStore) -> None:
    day = 20_000 * 86400.0  # a UTC midnight
    await store.create_run("r1", "wf", b"{}", day, tenant="acme")
    await _at(store, day).claim("A", LEASE, 10, WF)
    await store.commit(
        UnitOfWork(
            "r1",
            "A",
            [_metered("r1", "llm#0", 0.25, day + 10), _metered("r1", "llm#1", 0.5, day + 20)],
        )
    )
    await store.commit(
        UnitOfWork("r1", "A", [_metered("r1", "llm#2", 1.0, day - 5)])
    )  # the day before
    assert await store.spent(workflow="wf", since=day) == pytest.approx(0.75)
    assert await store.spent(tenant="acme", since=day) == pytest.approx(0.75)
    assert await store.spent(workflow="wf", since=day - 86400) == pytest.approx(1.75)
    # a rewritten step replaces its cost instead of adding it twice
    await store.commit(UnitOfWork("r1", "A", [_metered("r1", "llm#1", 0.125, day + 20)]))
    assert await store.spent(workflow="wf", since=day) == pytest.approx(0.375)
    # the running totals agree with summing the usage rows (any `since` that is not a midnight)
    assert await store.spent(workflow="wf", since=day + 1) == pytest.approx(0.375)
    assert await store.spent(tenant="acme", since=day - 86400 + 1) == pytest.approx(1.375)


# What version 16 added (sessions, memory), taken off a new store to make an older one.
_WITHOUT_V16 = """
DROP TABLE memories_fts; DROP TABLE memories; DROP TABLE memory_extracts;
DROP TABLE session_kv; DROP INDEX runs_by_session; ALTER TABLE runs DROP COLUMN session;
"""


async def test_daily_totals_are_backfilled_on_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/keel.db"
    day = 20_000 * 86400.0
    store = SQLiteStore(url)
    await store.create_run("r1", "wf", b"{}", day, tenant="acme")
    await _at(store, day).claim("A", LEASE, 10, WF)
    await store.commit(UnitOfWork("r1", "A", [_metered("r1", "llm#0", 0.25, day + 10)]))
    await store.close()
    db = sqlite3.connect(tmp_path / "keel.db")
    db.execute("DROP TABLE usage_daily")  # as a v11 store was
    db.execute("ALTER TABLE spans DROP COLUMN reconstructed")
    db.executescript(_WITHOUT_V16)
    db.execute("PRAGMA user_version=11")
    db.commit()
    db.close()
    store = SQLiteStore(url)
    assert await store.spent(workflow="wf", since=day) == pytest.approx(0.25)
    assert await store.spent(tenant="acme", since=day) == pytest.approx(0.25)
    await store.close()


async def test_values_nested_past_the_json_readers_limit_read_back(store: SQLiteStore) -> None:
    # pydantic_core writes JSON up to 254 levels deep but reads only 200: a run holding
    # 230 levels must not make the store unreadable (runs list, show, console).
    deep: Any = 1
    for _ in range(230):
        deep = [deep]
    data = pydantic_core.to_json({"data": deep})
    await store.create_run("deep", "wf", data, T0)
    run = await store.get_run("deep")
    assert run is not None and run.input == {"data": deep}
    assert [r.id for r in await store.list_runs(RunFilter())] == ["deep"]
