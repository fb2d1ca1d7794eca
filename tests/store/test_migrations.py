"""A store made by an earlier Keel opens, upgrades and reads back whole through today's
interfaces. `fixtures/v15.db` was made by the schema before the store split (its script:
fixtures/make_v_current.py); nothing in it may be lost or misread."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keel.store import RunFilter, Store, open_store
from keel.store._sqlite_schema import SCHEMA_VERSION
from keel.types import RunStatus, StepKind, StepStatus
from tests.backends import backend, is_sqlite

# The fixture is a file SQLite wrote with schema v15, opened straight from its path; a
# backend without such a past brings its own earlier-version fixture.
pytestmark = pytest.mark.skipif(
    not is_sqlite(), reason=f"fixtures/v15.db is a SQLite store; this is {backend().name}"
)

FIXTURES = Path(__file__).parent / "fixtures"
T0 = 1_700_000_000.0
WF = "triage"


@pytest.fixture
async def v15(tmp_path: Path) -> AsyncIterator[Store]:
    path = tmp_path / "keel.db"
    shutil.copy(FIXTURES / "v15.db", path)
    store = open_store(f"sqlite:///{path}")
    yield store
    await store.close()


async def test_the_v15_store_upgrades_to_the_current_schema(v15: Store, tmp_path: Path) -> None:
    # the schema version lives in the file's header: read it there
    db = sqlite3.connect(tmp_path / "keel.db")
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        db.close()


async def test_runs_in_every_status_and_their_journals_read_back(v15: Store) -> None:
    runs = {r.id: r for r in await v15.list_runs(RunFilter(limit=100))}
    assert {r.status for r in runs.values()} == set(RunStatus)
    running = runs["run-running"]
    assert (running.lease_owner, running.tenant, running.input) == ("w1", "acme", {"ticket": 7})
    waiting = runs["run-waiting"]
    assert (waiting.wake_at, waiting.waiting_on) == (T0 + 3600, ["go"])
    assert waiting.state == {"category": "billing"}
    done = runs["run-succeeded"]
    assert (done.result, done.ended_at, done.degraded) == ({"ok": True}, T0 + 5, ["fallback#0"])
    failed = runs["run-failed"]
    assert failed.error is not None and failed.error.message == "boom"

    steps = {s.key: s for s in await v15.load_steps("run-running")}
    assert steps["lookup#0"].output == {"account": "a1"}
    assert steps["classify#0"].kind is StepKind.LLM
    [pay] = await v15.load_steps("run-failed")
    assert (pay.status, pay.input) == (StepStatus.ERROR, {"amount": 5})
    fetch = {s.key: s for s in await v15.load_steps("run-succeeded")}["fetch#0"]
    assert fetch.blob == "blob-digest-1"
    assert await v15.load_blob("blob-digest-1") == b'"' + b"x" * 5000 + b'"'


async def test_people_requests_and_the_audit_log_read_back(v15: Store) -> None:
    approval = await v15.get_review("rev-approval")
    assert approval is not None
    assert (approval.kind, approval.status, approval.queue) == ("approval", "pending", "payments")
    assert approval.tool == "refund" and approval.args == {"amount": 5}
    sample = await v15.get_review("rev-sample")
    assert sample is not None and (sample.status, sample.decided_by) == ("approved", "alice")
    assert sample.decision is not None and sample.decision["note"] == "fine"
    [esc] = await v15.list_escalations(run_id="run-running")
    assert (esc.id, esc.status, esc.packet.reason) == ("esc-1", "open", "outcome unknown")
    log = await v15.audit_log()
    assert [(e.target, e.action) for e in log] == [
        ("rev-approval", "requested"),
        ("rev-sample", "requested"),
        ("rev-sample", "approved"),
        ("alice", "user_added"),
    ]
    assert await v15.count_sample(WF, "2023-11-14") == 2  # it had counted one


async def test_usage_cache_spans_identity_and_workers_read_back(v15: Store) -> None:
    assert await v15.spent(run_id="run-running") == pytest.approx(0.25)
    [group] = await v15.usage_report("model")
    assert (group.key, group.calls, group.input_tokens, group.cache_hits) == ("gpt-x", 1, 120, 0)
    assert await v15.cache_get("cache-key", T0) == '{"text": "hi"}'
    spans = await v15.load_spans("000000000000000000000000000000f1")
    assert [(s.name, s.status, s.parent_id) for s in spans] == [
        ("triage", "OK", None),
        ("fetch", "ERROR", "00000000000000a1"),
    ]
    assert spans[1].events == '[{"name": "retry"}]'
    user = await v15.get_user("alice")
    assert user is not None and (user.role, user.groups) == ("reviewer", ("payments",))
    assert await v15.user_by_token_id("tid-alice") == user
    session = await v15.get_session("sess-1", T0)
    assert session is not None and (session.user, session.role) == ("alice", "reviewer")
    [worker] = await v15.list_workers()
    assert (worker.owner, worker.workflows) == ("w1", (WF,))


async def test_an_upgraded_store_keeps_working(v15: Store) -> None:
    # The waiting run wakes on its signal; a pending one is claimed and finished.
    await v15.send_signal("run-waiting", "go", b'"now"', T0 + 10)
    claimed = {c.run.id for c in await v15.claim("w2", 30.0, 10, [WF])}
    assert {"run-pending", "run-waiting"} <= claimed
    await v15.finish_run("run-pending", "w2", RunStatus.SUCCEEDED, b"1", None, None, [], T0 + 20)
    run = await v15.get_run("run-pending")
    assert run is not None and run.status is RunStatus.SUCCEEDED
