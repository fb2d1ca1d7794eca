"""Store faults never fail a run, on Postgres: real `keel worker` processes while the
server is killed (`kill -9` of the postmaster) and started again, or every Keel
connection is dropped (`pg_terminate_backend`); conflicts (40001, 40P01) and a
connection reset inside a write are retried whole, inside the store call, before they
surface. SQLite's own faults: tests/test_store_faults.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fault_fleet import APP, Fleet, until
from tests.services import postgres as pg


@pytest.fixture()
def server() -> Iterator[pg.Server]:
    """A server of this test's own (it is killed and restarted), durable: a commit it
    acknowledged survives the kill."""
    try:
        srv = pg.start_server(durable=True)
    except pg.Unavailable as exc:
        pg.unavailable(str(exc))
        raise
    holder = [srv]
    try:
        yield srv
    finally:
        pg.stop_server(holder[0])


def _database(srv: pg.Server) -> str:
    import psycopg

    with psycopg.connect(srv.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE keel")
    return srv.url("keel")


def test_kill_9_of_the_postmaster_mid_run_then_a_restart_fails_no_run(
    tmp_path: Path, server: pg.Server
) -> None:
    fleet = Fleet(tmp_path, _database(server))
    fleet.enqueue("chain", 6, n=40)
    fleet.enqueue("fan", 2, n=30)
    fleet.workers(2, "--max-runs", "4")  # the runs spread over both
    until(lambda: fleet.busy() == 2, "both workers to run steps")
    pg.kill_server(server)
    # down past the store's wait for a connection (5 s): the workers pause, once each
    until(
        lambda: all("keel worker paused" in (tmp_path / f"worker{i}.err").read_text()
                    for i in range(2)),
        "both workers to pause",
    )  # fmt: skip
    # a command that writes while the server is down: one line, exit 3, nothing lost
    res = fleet.keel("signal", "chain0", "go")
    assert res.returncode == 3 and "Traceback" not in res.stderr, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("error:")], res.stderr
    pg.restart_server(server)  # the fixture stops it: stop_server finds the new postmaster
    fleet.settle()
    # 6 chains with a step each in flight, 2 maps with up to 4 each
    fleet.check(episodes=1, in_flight=6 + 2 * 4)


def test_every_keel_connection_terminated_mid_run_fails_no_run(
    tmp_path: Path, server: pg.Server
) -> None:
    import psycopg

    fleet = Fleet(tmp_path, _database(server))
    fleet.enqueue("chain", 6, n=40)
    fleet.workers(2, "--max-runs", "3")
    until(lambda: fleet.busy() == 2, "both workers to run steps")
    with psycopg.connect(server.url(), autocommit=True) as conn:
        for _ in range(3):  # and again while the pools reconnect
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = 'keel' AND pid <> pg_backend_pid()"
            )
            time.sleep(0.3)
    fleet.settle()
    fleet.check(episodes=None, in_flight=6 * 3)


def test_a_database_that_does_not_exist_stops_the_worker_with_one_line(
    tmp_path: Path, server: pg.Server
) -> None:
    fleet = Fleet(tmp_path, server.url("no_such_db"))
    res = fleet.keel("worker", APP)
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not exist" in errors[0], res.stderr
    assert "KEEL_STORE" in errors[0]


# -- retried inside the store call -----------------------------------------------------


class _Flaky:
    """A store call that fails its first `times` runs with `error`, then counts a row."""

    def __init__(self, error: Any, times: int, at_commit: bool = False) -> None:
        self.error, self.times, self.at_commit, self.calls = error, times, at_commit, 0

    def __call__(self, s: Any) -> int:
        self.calls += 1
        with s.write():
            s.execute("CREATE TABLE IF NOT EXISTS flaky (n INT)")
            s.execute("INSERT INTO flaky VALUES (1)")
            if self.calls <= self.times and not self.at_commit:
                raise self.error
        if self.calls <= self.times:  # as if the connection broke during the COMMIT
            raise self.error
        (n,) = s.execute("SELECT count(*) FROM flaky").fetchone()
        return int(n)


@pytest.fixture()
async def pg_store(server: pg.Server) -> Any:
    from keel.store.postgres import PostgresStore

    store = PostgresStore(_database(server))
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize("sqlstate", ["40001", "40P01", "reset"])
async def test_conflicts_and_a_reset_before_commit_are_retried_whole(
    pg_store: Any, sqlstate: str
) -> None:
    import psycopg

    error: psycopg.Error
    if sqlstate == "reset":
        error = psycopg.OperationalError("server closed the connection unexpectedly")
    else:
        error = psycopg.errors.lookup(sqlstate)("could not serialize access")
    flaky = _Flaky(error, times=2)
    assert await pg_store._call(flaky) == 1  # the failed attempts were rolled back whole
    assert flaky.calls == 3


async def test_retries_run_out_into_one_transient_store_error(pg_store: Any) -> None:
    import psycopg

    from keel.errors import StoreError

    flaky = _Flaky(psycopg.errors.DeadlockDetected("deadlock detected"), times=99)
    with pytest.raises(StoreError) as got:
        await pg_store._call(flaky)
    assert got.value.data["kind"] == "conflict" and got.value.data["sqlstate"] == "40P01"
    assert flaky.calls == 5


async def test_a_reset_during_commit_is_never_retried(pg_store: Any) -> None:
    import psycopg

    from keel.errors import StoreError

    flaky = _Flaky(psycopg.OperationalError("connection reset"), times=1, at_commit=True)
    with pytest.raises(StoreError) as got:
        await pg_store._call(flaky)
    assert got.value.data["kind"] == "unreachable"
    assert flaky.calls == 1  # its outcome is unknown: the run resumes from its journal


async def test_a_failover_to_a_read_only_server_is_a_store_fault(pg_store: Any) -> None:
    from keel.errors import StoreError

    def write(s: Any) -> None:
        with s.write():
            s.execute("SET TRANSACTION READ ONLY")
            s.execute("CREATE TABLE nope (n INT)")

    with pytest.raises(StoreError) as got:
        await pg_store._call(write)
    assert got.value.data["kind"] == "read-only" and got.value.data["sqlstate"] == "25006"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ('connection failed: FATAL:  password authentication failed for user "keel"', "auth"),
        ('connection failed: FATAL:  database "keel" does not exist', "missing"),
        ("server closed the connection unexpectedly", "unreachable"),
        ("40001", "conflict"),
        ("40P01", "conflict"),
        ("53100", "full"),
        ("25006", "read-only"),
        ("57P01", "unreachable"),
        ("53300", "busy"),
        ("XX001", "corrupt"),
    ],
)
def test_postgres_faults_are_classified(error: str, kind: str) -> None:
    """What the worker does with each (keel.engine.worker): auth, missing and corrupt
    stop it with one line; the others pause it until the store is back."""
    import psycopg

    from keel.store.postgres import _fault

    exc = (
        psycopg.errors.lookup(error)("x")
        if len(error) == 5 and error[:2].isalnum() and " " not in error
        else psycopg.OperationalError(error)
    )
    got = _fault("postgresql://keel:secret@db/keel", exc)
    assert got.data["kind"] == kind
    assert "secret" not in got.message


async def test_lasting_faults_stop_a_worker_and_passing_ones_pause_it(tmp_path: Path) -> None:
    from keel.errors import StoreError
    from tests.apps.faults_app import build

    app = build(f"sqlite:///{tmp_path}/keel.db")
    try:
        for kind, pauses in [("unreachable", True), ("auth", False)]:
            worker = app.worker()
            worker._tasks = [object()]  # type: ignore[list-item]  # as if running
            worker._store_fault(StoreError("store failed", kind=kind))
            assert (worker.paused is not None) is pauses
            assert (worker.fault is not None) is not pauses
    finally:
        await app.close()
