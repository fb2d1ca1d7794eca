"""Proof the SQL layer is neutral: on a throwaway Postgres 15, the neutral schema's DDL
applies as the Postgres dialect renders it, and every statement the neutral query
modules run (recorded while a SQLite store does one of everything) PREPAREs.

The server is the session's throwaway Postgres (tests/services/postgres.py), talked to
with `psql` on a database of each test's own; without the binaries the test is skipped
with the reason, and under CI=true it fails instead.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keel.codec import AESGCMCodec, new_key
from keel.store import (
    DriftMonitorSpec,
    DriftValue,
    EvalCaseResult,
    EvalResult,
    PurgeScope,
    RunFilter,
    SpanRecord,
)
from keel.store.records import ConsoleSession, StepWrite, User, WorkerBeat
from keel.store.sql import memory
from keel.store.sql.core import renderer
from keel.store.sql.dialect import Renderer
from keel.store.sql.postgres_dialect import PostgresDialect
from keel.store.sql.schema import ddl
from keel.store.sql.store import SQLStore
from keel.store.sqlite import SQLiteStore
from keel.store.unit import UnitOfWork
from keel.types import Escalation, EscalationPacket, ReviewRequest, RunStatus
from tests.limits import WAIT
from tests.services import postgres as postgres_service
from tests.store import kit


@pytest.fixture
def postgres() -> list[str]:
    """A psql command line for a fresh, empty database on the session's throwaway Postgres
    (tests/services/postgres.py: skips without the binaries, fails under CI=true)."""
    url = postgres_service.fresh_database("prep")
    return postgres_service.server().psql(url.rsplit("/", 1)[1])


def _psql(cmd: list[str], script: str, *, stop: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cmd, "-v", f"ON_ERROR_STOP={int(stop)}", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=WAIT * 6,
    )


class _Recorder(Renderer):
    """Renders as SQLite's, and keeps every neutral statement it is asked for."""

    def __init__(self, inner: Renderer) -> None:
        self.inner, self.seen = inner, set[str]()
        self.cache = {}

    def __call__(self, sql: str) -> str:
        self.seen.add(sql)
        return self.inner(sql)


async def _memory_of_everything(store: SQLiteStore) -> None:
    from keel.store import MemoryExtract, MemoryRow

    row = MemoryRow(
        id="m1",
        namespace="ns",
        text="t",
        digest="d",
        embedder="e",
        vector=b"\0\0\0\0",
        valid_from=1.0,
        metadata={"a": 1},
    )
    await store.memory_insert([row])
    await store.memory_rows(ids=["m1"], seqs=[1])
    await store.memory_keyword("ns", ["t"], None, 5)
    await store.memory_keyword("ns", ["t"], 2.0, 5)
    await store.memory_vectors("ns", 0, 5)
    await store.memory_list("ns", current=False)
    await store.memory_list("ns")
    await store.memory_supersede(
        "m1",
        MemoryRow(
            id="m2", namespace="ns", text="u", digest="d", embedder="e", vector=None, valid_from=2.0
        ),
    )
    await store.memory_namespaces()
    await store.memory_forget("m2")
    await store.memory_forget("m1", by="ada")
    await store.memory_extract_put([MemoryExtract("r1", 0, "ns", "t", "added")])
    await store.memory_extracts("r1")


async def _one_of_everything(store: SQLiteStore) -> None:
    """Every `SQLStore` method once (and the branches that build other statements)."""
    await _memory_of_everything(store)
    await kit.create(store, "r1")
    await store.get_run("r1")
    await store.list_runs(RunFilter(status=RunStatus.PENDING, workflow="wf", since=0, until=9e9))
    await store.list_runs(RunFilter(session="s1"))
    await store.session_write("s1", "k", "1", writer="w1")
    await store.session_write("s1", "k", "2", writer="w2", ttl=5.0, expect="w1")
    await store.session_write("s1", "n", "1", writer="w3", expect=None)
    await store.session_write("s1", "n", None, writer="w4")
    await store.session_get("s1", "k")
    await store.session_applied("s1", "w1")
    await kit.claimed(store, "r1", "A")
    await store.claim("B", 30.0, 5, ["wf"], ids=["r1", "r2"])
    await kit.renew(store, "A", ["r1"])
    await store.next_due(["wf"])
    await store.next_due(["wf"], ids=["r1"])
    now = await store.now()
    review = ReviewRequest(
        id="rv1", kind="approval", run_id="r1", workflow="wf", step="s#0", queue="q",
        status="pending", request={"a": 1}, created_at=now,
    )  # fmt: skip
    esc = Escalation(
        id="e1", run_id="r1", workflow="wf", queue="q", kind="k", step="s#0", status="open",
        packet=EscalationPacket(workflow="wf", run_id="r1", step="s#0", reason="r"),
        created_at=now,
    )  # fmt: skip
    uow = UnitOfWork("r1", "A", [kit.step("r1", "a#0", usage=kit.usage(0.5))], [review], [esc])
    await store.commit(uow)
    await store.load_steps("r1")
    blob = StepWrite(kit.rec("r1", "big#0", blob="dg"), None, b"data", None)
    await store.commit(UnitOfWork("r1", "A", [blob]))
    await store.save_blob("claim:r1:dg", b"payload")
    await store.load_blob("dg")
    await store.take_signal("r1", "A", "go", kit.step("r1", "go#0"), [])
    await kit.suspend(store, "r1", "A", waiting_on=["go"], wake_at=now + 60)
    await kit.signal(store, "r1", "go")
    await store.list_reviews("approval", "pending", "q", "wf", run_id="r1", latest_decided=True)
    await store.count_reviews(["approval"], "pending", "q")
    await store.get_review("rv1")
    await store.requeue_review("rv1", "q2", None, now)
    await store.decide_review("rv1", "approved", {"note": "ok"}, "ann", now, "go")
    await store.replace_review("rv1", review, now)
    await store.count_sample("wf", "2026-01-01")
    await store.list_escalations("open", "q", run_id="r1")
    await store.get_escalation("e1")
    await store.resolve_escalation("e1", "resolved", {"x": 1}, "ann", now)
    await store.audit_log("rv1")
    await kit.claimed(store, "r1", "A")
    await kit.release(store, "r1", "A")
    await kit.claimed(store, "r1", "A")
    await kit.finish(store, "r1", "A")
    await store.running_owners()
    await store.expire_owner("A")
    await kit.create(store, "r2")
    await kit.cancel(store, "r2")
    await store.spent(run_id="r1")
    await store.spent(workflow="wf", since=0.0)
    for by in ("run", "workflow", "tenant", "model", "step"):
        await store.usage_report(by, workflow="wf", tenant="t", since=0.0)
    await store.cache_put("k", "v", now + 60)
    await store.cache_get("k", now)
    await store.cache_purge(now)
    result = EvalResult("e1", "suite", 1.0, 2.0, "pass", {"means": {}})
    await store.save_eval(result, [EvalCaseResult("e1", "c1", 0, "r1", True, {}, ("t",))])
    await store.list_evals()
    await store.list_evals(suite="suite", limit=5)
    await store.eval_cases("e1")
    await store.get_eval("e1")
    await store.put_drift_monitors([DriftMonitorSpec("wf", "m", {"kind": "metric"}, now)])
    await store.list_drift_monitors()
    await store.list_drift_monitors("wf")
    await store.add_drift_values([DriftValue("wf", "m", "r1", now, 1.0, None)])
    await store.drift_values("wf", "m", 10)
    await store.drift_values("wf", "m", 10, before=(now, 5), start=0.0, end=now + 1)
    span = SpanRecord("s1", "t1", None, "r1", "step", "INTERNAL", 1, 2, "OK", None, "{}")
    await store.write_spans([span])
    await store.load_spans("t1")
    await store.span_ids("t1")
    await store.purge_spans(0)
    user = User("ann", "admin", "0123456789abcdef", "h", ("g",), now)
    await store.add_user(user)
    await store.get_user("ann")
    await store.user_by_token_id("0123456789abcdef")
    await store.list_users()
    await store.create_session(ConsoleSession("sid", "ann", "c", None, now, now + 60))
    await store.get_session("sid", now)
    await store.delete_session("sid")
    await store.purge_sessions(now)
    await store.rotate_token("ann", "fedcba9876543210", "h2")
    await store.remove_user("ann")
    await store.worker_beat(WorkerBeat("A", "h", 1, ("wf",), now, now, 1.0), forget_before=0)
    await store.list_workers()
    await store.remove_worker("A")
    scope = PurgeScope(ended_before=now + 3600, workflow="wf")
    await store.count_purge(scope, now)
    await store.purge_expired(PurgeScope(ended_before=now + 86400 * 2), now + 120)
    await store.payload_keys()
    await store.purge_runs(scope)


def _recording(store: SQLiteStore, seen: set[str], called: set[str]) -> SQLiteStore:
    """`store`, keeping every neutral statement it runs and every query function."""
    recorder = _Recorder(store._s.render)
    recorder.seen = seen
    store._s.render, store._s._cache = recorder, {}  # every statement misses: recorded
    through = store._call

    async def call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        called.add(fn.__name__)
        return await through(fn, *args, **kwargs)

    store._call = call  # type: ignore[method-assign]
    return store


@pytest.fixture
async def statements(tmp_path: Path) -> list[str]:
    """The neutral statements one of everything runs, as Postgres is given them."""
    seen: set[str] = set()
    called: set[str] = set()
    url = f"sqlite:///{tmp_path}/keel.db"
    store = _recording(SQLiteStore(url), seen, called)
    try:
        await _one_of_everything(store)
    finally:
        await store.close()
    # sealing what was stored in clear rewrites the append-only audit log too
    store = _recording(SQLiteStore(url, AESGCMCodec.from_text(new_key())), seen, called)
    try:
        await store.rekey(batch=1)
    finally:
        await store.close()
    public = {n for n, fn in vars(SQLStore).items() if callable(fn) and not n.startswith("_")}
    missed = public - called
    assert not missed, f"add these to _one_of_everything: {sorted(missed)}"
    assert {"{append_only_off:audit}", "{append_only_on:audit}"} <= seen
    pg = renderer(PostgresDialect())
    # the keyword query is the dialect's own statement: Postgres's, not SQLite's
    seen = {q for q in seen if "memories_fts" not in q}
    seen |= {PostgresDialect().memory_keyword(v) for v in (memory._CURRENT, memory._AS_OF)}
    return sorted({pg(s).replace("\n", " ") for s in seen})


def test_the_neutral_schema_applies_on_postgres(postgres: list[str]) -> None:
    script = f"BEGIN;\n{ddl(PostgresDialect())}\nROLLBACK;\n"
    done = _psql(postgres, script, stop=True)
    assert done.returncode == 0, done.stderr


def test_every_neutral_statement_prepares_on_postgres(
    postgres: list[str], statements: list[str]
) -> None:
    assert len(statements) > 80  # one of everything is many statements
    lines = [f"BEGIN;\n{ddl(PostgresDialect())}"]
    first = len("\n".join(lines).splitlines()) + 1
    for i, sql in enumerate(statements):
        if re.match(r"(ALTER|CREATE|DROP) ", sql):  # DDL: run it (and roll it back)
            lines.append(f"SAVEPOINT p{i}; {sql}; ROLLBACK TO SAVEPOINT p{i};")
        else:
            lines.append(f"SAVEPOINT p{i}; PREPARE q{i} AS {sql}; ROLLBACK TO SAVEPOINT p{i};")
    lines.append("ROLLBACK;")
    done = _psql(postgres, "\n".join(lines) + "\n", stop=False)
    failed = []
    for m in re.finditer(r"psql:<stdin>:(\d+): ERROR:\s+(.*)", done.stderr):
        line = int(m.group(1))
        if line >= first and "current transaction is aborted" not in m.group(2):
            failed.append(f"{m.group(2)}\n    {statements[line - first]}")
    assert not failed, "\n".join(failed)
    assert "ERROR" not in done.stderr, done.stderr
