"""Retention: `keel runs purge` and the store's purge (docs/storage.md).

Runs are written through the real store API at explicit times (the store takes `now`
as an argument), so "40 days ago" needs no waiting and no clock tricks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keel.cli import cli
from keel.engine import retention
from keel.store import SpanRecord, UnitOfWork, Usage, UsageGroup
from keel.store._sqlite_schema import MIGRATIONS, SCHEMA
from keel.store.base import PURGED_RUNS, Purged, PurgeScope, StepWrite, audit_detail
from keel.store.sqlite import SQLiteStore
from keel.types import (
    Escalation,
    EscalationPacket,
    ReviewRequest,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    StructuredError,
)
from tests.backends import fresh_url

DAY = 86400.0
NOW = time.time()
OLD = NOW - 40 * DAY  # ended long before a 30-day retention
RECENT = NOW - 1 * DAY
CUTOFF = NOW - 30 * DAY
SECRET = "Hunter2-Secret-Payload"
SHARED = b'"' + b"s" * 2000 + b'"'  # a blob an old and a recent run both refer to
PRIVATE = b'"' + b"p" * 2000 + SECRET.encode() + b'"'  # only an old run's
OLD_PAIR = b'"' + b"o" * 2000 + b'"'  # two old runs', gone with both


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(fresh_url(tmp_path))
    yield s
    await s.close()


def _rec(run_id: str, key: str, at: float, **kw: Any) -> StepRecord:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "key": key,
        "scope": "",
        "position": int(key.rsplit("#", 1)[-1]) if "#" in key else 0,
        "kind": StepKind.TOOL,
        "name": key.split("#")[0],
        "digest": "d",
        "status": StepStatus.OK,
        "started_at": at,
        "ended_at": at + 1,
        **kw,
    }
    return StepRecord(**fields)


def _meter(model: str, cost: float, tokens: int = 10) -> Usage:
    return Usage(model=model, input_tokens=tokens, output_tokens=tokens // 2, cost_usd=cost)


def _span(run_id: str, n: int, end_s: float) -> SpanRecord:
    return SpanRecord(
        f"{n:016x}",
        hashlib.md5(run_id.encode()).hexdigest(),
        None,
        run_id,
        f"span {n}",
        "INTERNAL",
        int((end_s - 1) * 1e9),
        int(end_s * 1e9),
        "OK",
        None,
        json.dumps({"keel.step.input": f"{SECRET}:{run_id}"}),
        None,
        None,
    )


async def _run(
    store: SQLiteStore,
    run_id: str,
    at: float,
    status: RunStatus = RunStatus.SUCCEEDED,
    *,
    workflow: str = "wf",
    tenant: str | None = None,
    blobs: tuple[bytes, ...] = (),
    usage: tuple[tuple[str, float], ...] = (("m1", 0.25),),
    people: bool = False,
) -> None:
    """A run of `workflow` that started at `at` and is left in `status` (ended at `at`+10
    when it ended), with steps, a blob per `blobs`, usage, a signal, spans and, with
    `people`, an approval request and an escalation."""
    payload = json.dumps({"note": f"{SECRET}:{run_id}"}).encode()  # in every table
    await store.create_run(run_id, workflow, payload, at, tenant=tenant)
    if status is RunStatus.PENDING:
        return
    if status is RunStatus.CANCELLED:
        await store.cancel_run(run_id, at + 10)
        return
    owner = f"w-{run_id}"
    assert [c.run.id for c in await store.claim(owner, 30, 1, [workflow], ids=[run_id])]
    writes = [StepWrite(_rec(run_id, "a#0", at + 2), b"1")]
    for i, blob in enumerate(blobs):
        writes.append(StepWrite(_rec(run_id, f"big#{i}", at + 3, blob=_digest(blob)), None, blob))
    for i, (model, cost) in enumerate(usage):
        rec = _rec(run_id, f"llm#{i}", at + 4, kind=StepKind.LLM)
        writes.append(StepWrite(rec, b'"answer"', usage=_meter(model, cost)))
    await store.commit(UnitOfWork(run_id, owner, writes))
    await store.send_signal(run_id, "later", payload, at + 5)
    await store.write_spans([_span(run_id, 1, at + 6), _span(run_id, 2, at + 7)])
    if people:
        review = ReviewRequest(
            id=f"{run_id}:approval:pay#0",
            kind="approval",
            run_id=run_id,
            workflow=workflow,
            step="pay#0",
            queue="payments",
            status="pending",
            request={"action": {"tool": "pay", "args": {"note": f"{SECRET}:{run_id}"}}},
            created_at=at + 6,
        )
        await store.commit(UnitOfWork(run_id, None, reviews=[review]))
        packet = EscalationPacket(
            workflow=workflow, run_id=run_id, step="x#0", reason="503", input=f"{SECRET}:{run_id}"
        )
        esc = Escalation(
            id=f"{run_id}:esc",
            run_id=run_id,
            workflow=workflow,
            queue="ops",
            kind="tool",
            step="x#0",
            packet=packet,
            created_at=at + 6,
        )
        await store.commit(UnitOfWork(run_id, owner, escalations=[esc]))
    if status is RunStatus.RUNNING:
        return
    if status is RunStatus.WAITING:
        await store.suspend_run(run_id, owner, None, ["go"], [], at + 8)
        return
    error = StructuredError(type="Boom", message="boom") if status is RunStatus.FAILED else None
    await store.finish_run(run_id, owner, status, b"7", error, None, [], at + 10)


def _rows(db_path: Path, table: str, run_id: str) -> int:
    db = sqlite3.connect(db_path)
    try:
        (n,) = db.execute(f"SELECT COUNT(*) FROM {table} WHERE run_id=?", (run_id,)).fetchone()
        return int(n)
    finally:
        db.close()


def _table_counts(db_path: Path) -> dict[str, int]:
    db = sqlite3.connect(db_path)
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: db.execute(f"SELECT COUNT(*) FROM {n}").fetchone()[0] for n in names}
    finally:
        db.close()


OF_RUN = ("steps", "signals", "spans", "reviews", "escalations", "usage")


async def _populate(store: SQLiteStore) -> None:
    """Old runs in every state, and recent ones, sharing blobs."""
    await _run(store, "old-ok", OLD, blobs=(SHARED, PRIVATE, OLD_PAIR), people=True)
    await _run(store, "old-failed", OLD + 60, RunStatus.FAILED, blobs=(OLD_PAIR,))
    await _run(store, "old-cancelled", OLD + 120, RunStatus.CANCELLED)
    await _run(store, "old-other", OLD + 180, workflow="other", tenant="acme")
    # never purged, however old: they have not ended
    await _run(store, "old-running", OLD, RunStatus.RUNNING, people=True)
    await _run(store, "old-waiting", OLD, RunStatus.WAITING)
    await _run(store, "old-pending", OLD, RunStatus.PENDING)
    await _run(store, "recent-ok", RECENT, blobs=(SHARED,), people=True)


async def test_purge_removes_old_ended_runs_with_everything_theirs(
    store: SQLiteStore, tmp_path: Path
) -> None:
    await _populate(store)
    await store.count_sample("wf", time.strftime("%Y-%m-%d", time.gmtime(OLD)))
    await store.count_sample("wf", time.strftime("%Y-%m-%d", time.gmtime(RECENT)))
    await store.cache_put("expired", "answer", NOW - 1)
    await store.cache_put("live", "answer", None)
    db_path = tmp_path / "keel.db"
    kept = ("old-running", "old-waiting", "old-pending", "recent-ok")
    before = {(t, r): _rows(db_path, t, r) for t in OF_RUN for r in kept}

    done = await retention.purge(store, PurgeScope(ended_before=CUTOFF), NOW)

    assert done == Purged(
        runs=4,
        steps=5 + 3 + 2,  # a#0, big#*, llm#0 of old-ok, old-failed and old-other
        signals=3,
        blobs=2,  # PRIVATE and OLD_PAIR; SHARED is still recent-ok's
        spans=6,
        reviews=1,
        escalations=1,
        usage=3,
        sample_counts=1,
        cache=1,
    )
    for run_id in ("old-ok", "old-failed", "old-cancelled", "old-other"):
        assert await store.get_run(run_id) is None
        assert all(_rows(db_path, t, run_id) == 0 for t in OF_RUN), run_id
    for run_id in kept:
        assert await store.get_run(run_id) is not None
    assert {(t, r): _rows(db_path, t, r) for t in OF_RUN for r in kept} == before
    assert await store.load_blob(_digest(SHARED)) == SHARED
    assert (await store.get_run("old-waiting")).status is RunStatus.WAITING  # type: ignore[union-attr]
    assert await store.cache_get("live", NOW) == "answer"

    # Idempotent: a second purge finds nothing, and takes no write lock for it.
    assert await retention.purge(store, PurgeScope(ended_before=CUTOFF), NOW) == Purged()


async def test_purge_by_status_and_workflow(store: SQLiteStore) -> None:
    await _populate(store)
    scope = PurgeScope(ended_before=CUTOFF, statuses=(RunStatus.FAILED,))
    assert (await retention.purge(store, scope, NOW)).runs == 1
    assert await store.get_run("old-failed") is None and await store.get_run("old-ok")
    scope = PurgeScope(ended_before=CUTOFF, workflow="other")
    assert (await retention.purge(store, scope, NOW)).runs == 1
    assert await store.get_run("old-other") is None and await store.get_run("old-ok")
    # OLD_PAIR was shared by old-ok and old-failed: it stays until both are gone
    assert await store.load_blob(_digest(OLD_PAIR)) == OLD_PAIR


def test_a_purge_scope_never_takes_runs_that_have_not_ended() -> None:
    for status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING):
        with pytest.raises(Exception, match="only ended runs can be purged"):
            PurgeScope(ended_before=NOW, statuses=(status,))


async def test_purge_goes_in_batches_each_a_whole_transaction(store: SQLiteStore) -> None:
    for i in range(25):
        await _run(store, f"old-{i:02d}", OLD + i, blobs=(OLD_PAIR,))
    scope = PurgeScope(ended_before=CUTOFF)
    sizes = [(await store.purge_runs(scope, 10)).runs for _ in range(4)]
    assert sizes == [10, 10, 5, 0]
    # the oldest ended first, and the blob all of them shared went with the last
    assert await store.count_purge(scope, NOW) == Purged()
    with pytest.raises(Exception, match="missing"):
        await store.load_blob(_digest(OLD_PAIR))


# -- costs ------------------------------------------------------------------------------


async def _usage_runs(store: SQLiteStore) -> None:
    day = OLD - OLD % DAY + 3600  # 01:00 UTC on an old day
    await _run(store, "old-a", day, usage=(("m1", 0.5), ("m2", 0.25)), tenant="acme")
    await _run(store, "old-b", day + 60, usage=(("m1", 1.0),), workflow="other")
    await _run(store, "old-c", day + DAY, usage=(("m2", 2.0),), tenant="bolt")
    await _run(store, "recent-ok", RECENT, usage=(("m1", 4.0),), tenant="acme")


def _by(rows: list[UsageGroup] | list[dict[str, Any]], key: str) -> dict[Any, tuple[Any, ...]]:
    """A cost report by group, from the store (UsageGroup) or `keel costs --json` (dicts)."""
    dicts = [r.as_dict() if isinstance(r, UsageGroup) else r for r in rows]
    return {
        r[key]: (r["calls"], r["input_tokens"], r["output_tokens"], round(r["cost_usd"], 9))
        for r in dicts
    }


async def test_cost_reports_still_answer_for_purged_days(store: SQLiteStore) -> None:
    await _usage_runs(store)
    day = OLD - OLD % DAY
    queries: list[dict[str, Any]] = [
        {},
        {"workflow": "wf"},
        {"tenant": "acme"},
        {"since": day + DAY},  # whole days: exact after the purge
        {"workflow": "wf", "tenant": "acme", "since": day},
    ]
    before = {
        (g, json.dumps(q)): _by(await store.usage_report(g, **q), g)
        for g in ("workflow", "tenant", "model")
        for q in queries
    }
    spent = {
        "wf": await store.spent(workflow="wf", since=day),
        "acme": await store.spent(tenant="acme", since=day),
    }
    by_run = _by(await store.usage_report("run"), "run")

    done = await retention.purge(store, PurgeScope(ended_before=CUTOFF), NOW)
    assert (done.runs, done.usage) == (3, 4)

    after = {
        (g, json.dumps(q)): _by(await store.usage_report(g, **q), g)
        for g in ("workflow", "tenant", "model")
        for q in queries
    }
    assert after == before
    # budgets read the per-day totals, which a purge leaves alone
    assert await store.spent(workflow="wf", since=day) == spent["wf"]
    assert await store.spent(tenant="acme", since=day) == spent["acme"]
    # by run (or step): the purged runs are one row, their totals intact
    purged = [v for k, v in by_run.items() if str(k).startswith("old-")]
    assert _by(await store.usage_report("run"), "run") == {
        "recent-ok": by_run["recent-ok"],
        PURGED_RUNS: (
            sum(v[0] for v in purged),
            sum(v[1] for v in purged),
            sum(v[2] for v in purged),
            round(sum(v[3] for v in purged), 9),
        ),
    }
    # What is lost: the hour. A --since inside a purged day leaves that day out.
    inside = _by(await store.usage_report("model", since=day + 7200), "model")
    assert inside == {"m1": (1, 10, 5, 4.0), "m2": (1, 10, 5, 2.0)}


def _filled(tmp_path: Path, *fill: Callable[[SQLiteStore], Awaitable[None]]) -> None:
    """Write runs to the store at tmp_path/keel.db (for the sync tests, where the CLI runs
    its own event loop)."""

    async def go() -> None:
        s = SQLiteStore(fresh_url(tmp_path))
        try:
            for f in fill:
                await f(s)
        finally:
            await s.close()

    asyncio.run(go())


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("KEEL_STORE", fresh_url(tmp_path))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_keel_costs_answers_after_keel_runs_purge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _filled(tmp_path, _usage_runs)
    code, out, _ = _cli(tmp_path, monkeypatch, "costs", "--by", "workflow", "--json")
    assert code == 0
    before = _by(json.loads(out), "workflow")
    code, out, err = _cli(tmp_path, monkeypatch, "runs", "purge", "--older-than", "30d", "--json")
    assert code == 0, err
    assert json.loads(out)["purged"]["runs"] == 3
    code, out, _ = _cli(tmp_path, monkeypatch, "costs", "--by", "workflow", "--json")
    assert code == 0 and _by(json.loads(out), "workflow") == before
    code, out, _ = _cli(tmp_path, monkeypatch, "costs", "--by", "run")
    assert code == 0 and PURGED_RUNS in out and "recent-ok" in out


# -- the command -------------------------------------------------------------------------


async def _expired_cache(store: SQLiteStore) -> None:
    await store.cache_put("expired", "answer", NOW - 1)


def test_dry_run_counts_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _filled(tmp_path, _populate, _expired_cache)
    db_path = tmp_path / "keel.db"
    tables = _table_counts(db_path)

    code, out, err = _cli(
        tmp_path, monkeypatch, "runs", "purge", "--older-than", "30d", "--dry-run", "--json"
    )
    assert code == 0, err
    dry = json.loads(out)
    assert dry["dry_run"] is True and dry["purged"]["runs"] == 4
    assert _table_counts(db_path) == tables

    code, out, _ = _cli(tmp_path, monkeypatch, "runs", "purge", "--older-than", "30d", "--dry-run")
    assert code == 0 and out.startswith("would purge 4 ended run(s)")
    assert _table_counts(db_path) == tables

    code, out, err = _cli(tmp_path, monkeypatch, "runs", "purge", "--older-than", "30d", "--json")
    assert code == 0, err
    assert json.loads(out)["purged"] == dry["purged"]  # the dry run said exactly this
    code, out, _ = _cli(tmp_path, monkeypatch, "runs", "purge", "--older-than", "30d")
    assert code == 0 and out.startswith("nothing to purge: no ended run ended before")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "30x"], "--older-than '30x' is not a duration: use a number and a unit"),
        (["--older-than", "30"], "--older-than '30' is not a duration"),
        (["--older-than", "-1d"], "--older-than '-1d' is not a duration"),
        (["--older-than", "d"], "--older-than 'd' is not a duration"),
        (["--older-than", ""], "--older-than '' is not a duration"),
        (["--older-than", "0d"], "--older-than '0d' is zero"),
        (["--older-than", "1d", "--status", "RUNNING"], "'RUNNING' is not an ended status"),
        (["--older-than", "1d", "--status", "done"], "'done' is not a run status"),
        (["--older-than", "1d", "--dry-run", "--vacuum"], "use one of them"),
        ([], "Missing option '--older-than'"),
    ],
)
def test_bad_purge_arguments_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    code, out, err = _cli(tmp_path, monkeypatch, "runs", "purge", *args)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_durations_in_every_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for given, seconds in (
        ("30d", 30 * DAY),
        ("12h", 43200),
        ("90m", 5400),
        ("45s", 45),
        ("2w", 14 * DAY),
        ("1.5D", 1.5 * DAY),
    ):
        code, out, err = _cli(
            tmp_path, monkeypatch, "runs", "purge", "--older-than", given, "--dry-run", "--json"
        )
        assert code == 0, err
        assert abs(time.time() - json.loads(out)["ended_before"] - seconds) < 60, given


def test_keel_runs_still_lists_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = _cli(tmp_path, monkeypatch, "runs", "--status", "failed", "--json")
    assert (code, json.loads(out)) == (0, []), err
    code, out, _ = _cli(tmp_path, monkeypatch, "runs", "--help")
    assert code == 0 and "purge" in out and "--status" in out


# -- what a purge leaves on disk ----------------------------------------------------------


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


async def _big_old_runs(store: SQLiteStore) -> None:
    for i in range(20):
        blob = b'"' + str(i).encode() * 100_000 + b'"'
        await _run(store, f"old-{i}", OLD + i, blobs=(blob,))


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


# -- the audit log ------------------------------------------------------------------------


def test_the_audit_log_keeps_no_payload_of_a_decision() -> None:
    decision = {
        "note": SECRET,
        "args": {"to": "bob", "amount": 40},
        "original": {"to": "bob", "amount": 400},
    }
    detail = audit_detail(decision)
    assert SECRET not in json.dumps(detail) and "400" not in json.dumps(detail)
    assert detail == {"fields": ["args", "note", "original"], "changed": ["amount"]}


async def test_a_decision_is_audited_without_its_payload(store: SQLiteStore) -> None:
    await _run(store, "old-running", OLD, RunStatus.RUNNING, people=True)
    review_id = "old-running:approval:pay#0"
    args = {"note": f"{SECRET}:edited"}
    decision = {"note": SECRET, "args": args, "original": {"note": f"{SECRET}:old-running"}}
    await store.decide_review(review_id, "edited", decision, "alice", NOW, None)
    requested, edited = await store.audit_log(review_id)
    assert (edited.actor, edited.action) == ("alice", "edited")
    assert edited.detail == audit_detail(decision)
    assert SECRET not in json.dumps([dataclasses.asdict(requested), dataclasses.asdict(edited)])
    # the decision itself stays with the request (and goes with its run)
    assert (await store.get_review(review_id)).decision["args"] == args  # type: ignore[union-attr,index]


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


# -- the worker's sweep --------------------------------------------------------------------


async def test_a_sweep_runs_at_most_once_per_interval_per_process(tmp_path: Path) -> None:
    stores = [SQLiteStore(f"sqlite:///{tmp_path}/{n}.db") for n in ("a", "b")]
    try:
        for s in stores:
            await _run(s, "old-1", OLD)
        a, b = stores
        assert await retention.sweep(a, 0, NOW, every=3600) is None  # 0 days: kept forever
        done = await retention.sweep(a, 30, NOW, every=3600)
        assert done is not None and done.runs == 1
        await _run(a, "old-2", OLD)
        assert await retention.sweep(a, 30, NOW + 3599, every=3600) is None
        assert await a.get_run("old-2") is not None
        # another store is swept on its own schedule
        assert (await retention.sweep(b, 30, NOW + 10, every=3600) or Purged()).runs == 1
        done = await retention.sweep(a, 30, NOW + 3600, every=3600)
        assert done is not None and done.runs == 1
    finally:
        for s in stores:
            await s.close()


def test_retention_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel import config

    monkeypatch.setenv("KEEL_RETENTION_DAYS", "30")
    monkeypatch.setenv("KEEL_RETENTION_INTERVAL", "60")
    _, settings = config.load(config_file=os.devnull)
    assert (settings.retention_days, settings.retention_interval) == (30.0, 60.0)
    monkeypatch.delenv("KEEL_RETENTION_DAYS")
    monkeypatch.delenv("KEEL_RETENTION_INTERVAL")
    _, settings = config.load(config_file=os.devnull)
    assert (settings.retention_days, settings.retention_interval) == (0.0, 3600.0)


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
