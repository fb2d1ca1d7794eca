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
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keel.cli import cli
from keel.engine import retention
from keel.store import SpanRecord, Store, UnitOfWork, Usage, UsageGroup, open_store
from keel.store.base import audit_detail
from keel.store.records import PURGED_RUNS, Purged, PurgeScope, StepWrite
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
from tests.store_snapshot import snapshot_at

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
    store: Store,
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


async def _holdings(store: Store, run_id: str) -> dict[str, list[str]]:
    """What the store's interfaces show of the run: its journal, spans, reviews,
    escalations and usage. (Its queued signals no interface lists: a purge counts them.)"""
    usage = [g for g in await store.usage_report("run") if g.key == run_id]
    return {
        "steps": sorted(f"{s.key} {s.status.value}" for s in await store.load_steps(run_id)),
        "spans": sorted(s.span_id for s in await store.load_spans(_trace(run_id))),
        "reviews": [r.id for r in await store.list_reviews(run_id=run_id, limit=1000)],
        "escalations": [e.id for e in await store.list_escalations(run_id=run_id, limit=1000)],
        "usage": [repr(g) for g in usage],
    }


def _trace(run_id: str) -> str:
    return hashlib.md5(run_id.encode()).hexdigest()  # _span's trace id


async def _populate(store: Store) -> None:
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


async def test_purge_removes_old_ended_runs_with_everything_theirs(store: Store) -> None:
    await _populate(store)
    await store.count_sample("wf", time.strftime("%Y-%m-%d", time.gmtime(OLD)))
    await store.count_sample("wf", time.strftime("%Y-%m-%d", time.gmtime(RECENT)))
    await store.cache_put("expired", "answer", NOW - 1)
    await store.cache_put("live", "answer", None)
    kept = ("old-running", "old-waiting", "old-pending", "recent-ok")
    before = {r: await _holdings(store, r) for r in kept}
    assert all(before["recent-ok"].values())  # the control: every kind of holding is seen

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
        assert not any((await _holdings(store, run_id)).values()), run_id
    for run_id in kept:
        assert await store.get_run(run_id) is not None
    assert {r: await _holdings(store, r) for r in kept} == before
    assert await store.load_blob(_digest(SHARED)) == SHARED
    assert (await store.get_run("old-waiting")).status is RunStatus.WAITING  # type: ignore[union-attr]
    assert await store.cache_get("live", NOW) == "answer"

    # Idempotent: a second purge finds nothing, and takes no write lock for it.
    assert await retention.purge(store, PurgeScope(ended_before=CUTOFF), NOW) == Purged()


async def test_purge_by_status_and_workflow(store: Store) -> None:
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


async def test_purge_goes_in_batches_each_a_whole_transaction(store: Store) -> None:
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


async def _usage_runs(store: Store) -> None:
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


async def test_cost_reports_still_answer_for_purged_days(store: Store) -> None:
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


def _filled(tmp_path: Path, *fill: Callable[[Store], Awaitable[None]]) -> None:
    """Write runs to the store at tmp_path/keel.db (for the sync tests, where the CLI runs
    its own event loop)."""

    async def go() -> None:
        s = open_store(fresh_url(tmp_path))
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


async def _expired_cache(store: Store) -> None:
    await store.cache_put("expired", "answer", NOW - 1)


def test_dry_run_counts_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _filled(tmp_path, _populate, _expired_cache)
    url = fresh_url(tmp_path)
    tables = snapshot_at(url)

    code, out, err = _cli(
        tmp_path, monkeypatch, "runs", "purge", "--older-than", "30d", "--dry-run", "--json"
    )
    assert code == 0, err
    dry = json.loads(out)
    assert dry["dry_run"] is True and dry["purged"]["runs"] == 4
    assert snapshot_at(url) == tables

    code, out, _ = _cli(tmp_path, monkeypatch, "runs", "purge", "--older-than", "30d", "--dry-run")
    assert code == 0 and out.startswith("would purge 4 ended run(s)")
    assert snapshot_at(url) == tables

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


async def _big_old_runs(store: Store) -> None:
    for i in range(20):
        blob = b'"' + str(i).encode() * 100_000 + b'"'
        await _run(store, f"old-{i}", OLD + i, blobs=(blob,))


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


async def test_a_decision_is_audited_without_its_payload(store: Store) -> None:
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


# -- the worker's sweep --------------------------------------------------------------------


async def test_a_sweep_runs_at_most_once_per_interval_per_process(tmp_path: Path) -> None:
    stores = [open_store(fresh_url(tmp_path, n)) for n in ("a", "b")]
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


