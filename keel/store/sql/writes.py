"""The writes several concerns make inside their own transaction: the lease check,
journal entries with their metered usage, opening reviews and escalations, signal
delivery, an audit entry, the wake-up of listening workers. Each takes a `Session`
already inside `write()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydantic_core

from keel.errors import LeaseLost
from keel.store.records import StepWrite
from keel.store.sql.core import ESC_COLS, REVIEW_COLS, STEP_COLS, Session
from keel.types import Escalation, ReviewRequest, RunInfo, RunStatus

_STEP_VALUES = ", ".join("?" * len(STEP_COLS.split(",")))
_STEP_CONFLICT = " ON CONFLICT (run_id, key) DO UPDATE SET " + ", ".join(
    f"{c.strip()}=excluded.{c.strip()}" for c in STEP_COLS.split(",")[2:]
)
_UPSERT_STEP = f"INSERT INTO steps ({STEP_COLS}) VALUES ({_STEP_VALUES}){_STEP_CONFLICT}"
# The same upsert guarded by the lease: the row is inserted only if the run is RUNNING
# under this owner, whose row it locks for the statement (Postgres infers the values'
# types from the target columns, as for VALUES).
_WRITE_LEASED_STEP = (
    f"INSERT INTO steps ({STEP_COLS}) SELECT {_STEP_VALUES} FROM runs"
    " WHERE id=? AND lease_owner=? AND status='RUNNING'{for_update}" + _STEP_CONFLICT
)
# The run's workflow and tenant are copied in; a step of a run that is gone meters nothing.
_UPSERT_USAGE = (
    "INSERT INTO usage (run_id, step_key, workflow, tenant, model, input_tokens,"
    " output_tokens, cost_usd, cache_hit, created_at)"
    " SELECT CAST(? AS TEXT), CAST(? AS TEXT), workflow, tenant, CAST(? AS TEXT),"
    " CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION), CAST(? AS BIGINT),"
    " CAST(? AS DOUBLE PRECISION) FROM runs WHERE id=?"
    " ON CONFLICT (run_id, step_key) DO UPDATE SET workflow=excluded.workflow,"
    " tenant=excluded.tenant, model=excluded.model, input_tokens=excluded.input_tokens,"
    " output_tokens=excluded.output_tokens, cost_usd=excluded.cost_usd,"
    " cache_hit=excluded.cache_hit, created_at=excluded.created_at"
)
_INSERT_REVIEW = (
    f"INSERT INTO reviews ({REVIEW_COLS}) VALUES"
    " (?, ?, ?, ?, ?, ?, 'pending', ?, NULL, ?, ?, NULL, NULL) ON CONFLICT (id) DO NOTHING"
)
_INSERT_ESCALATION = (
    f"INSERT INTO escalations ({ESC_COLS}) VALUES"
    " (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, NULL) ON CONFLICT (id) DO NOTHING"
)


def check_owner(s: Session, run_id: str, owner: str) -> None:
    """Raise LeaseLost unless `owner` holds the lease of running `run_id`."""
    row = s.execute(
        "SELECT lease_owner, status FROM runs WHERE id=?{for_update}", (run_id,)
    ).fetchone()
    if row is None or row[0] != owner or row[1] != "RUNNING":
        raise _lease_lost(run_id, row[1] if row else "missing")


def _lease_lost(run_id: str, status: str) -> LeaseLost:
    return LeaseLost(
        f"run {run_id} is no longer owned by this worker (status {status})",
        run_id=run_id,
        status=status,
    )


def count_daily(s: Session, run_id: str, step_key: str, cost: float, at: float) -> None:
    """Keep `usage_daily` in step with a usage row about to be written (or rewritten)."""
    old = s.execute(
        "SELECT u.workflow, u.tenant, u.cost_usd, u.created_at FROM usage u"
        " WHERE u.run_id=? AND u.step_key=?",
        (run_id, step_key),
    ).fetchone()
    changes: list[tuple[str | None, str | None, float, float]] = []
    if old is not None:
        changes.append((old[0], old[1], -old[2], old[3]))
    if cost:
        run = s.execute("SELECT workflow, tenant FROM runs WHERE id=?", (run_id,)).fetchone()
        if run is not None:
            changes.append((run[0], run[1], cost, at))
    for workflow, tenant, amount, when in changes:
        if not amount:
            continue
        day = int(when // 86400) * 86400
        for scope in (f"wf:{workflow}", f"tenant:{tenant}" if tenant is not None else None):
            if scope is not None:
                s.execute(
                    "INSERT INTO usage_daily (scope, day, cost_usd) VALUES (?, ?, ?)"
                    " ON CONFLICT (scope, day) DO UPDATE"
                    " SET cost_usd = usage_daily.cost_usd + excluded.cost_usd",
                    (scope, day, amount),
                )


def insert_steps(s: Session, writes: Sequence[StepWrite]) -> None:
    """Write journal entries, their out-of-line outputs and their metered usage."""
    for w in writes:
        r = w.record
        if w.usage is not None:
            m = w.usage
            count_daily(s, r.run_id, r.key, m.cost_usd, r.ended_at or r.started_at)
            s.execute(
                _UPSERT_USAGE,
                (
                    r.run_id,
                    r.key,
                    m.model,
                    m.input_tokens,
                    m.output_tokens,
                    m.cost_usd,
                    int(m.cache_hit),
                    r.ended_at or r.started_at,
                    r.run_id,
                ),
            )
        if w.blob is not None and r.blob:
            data = w.blob if s.codec is None else s.seal(w.blob, "blobs.data", r.blob)
            s.execute(
                "INSERT INTO blobs (digest, size, data) VALUES (?, ?, ?)"
                " ON CONFLICT (digest) DO NOTHING",
                (r.blob, len(w.blob), data),
            )
        s.execute(_UPSERT_STEP, _step_row(s, w))


def alone(w: StepWrite) -> bool:
    """True when `w` is one row of `steps` and nothing else (no usage, no blob row): what
    `write_leased_step` can write in one statement."""
    return w.usage is None and (w.blob is None or not w.record.blob)


def write_leased_step(s: Session, owner: str, w: StepWrite) -> None:
    """Write journal entry `w` (`alone`) if `owner` holds the lease of its running run,
    else raise LeaseLost having written nothing: one statement, no transaction.

    The lease predicate and the row lock (`{for_update}`) are the statement's, so a
    takeover either waits for this write or makes it insert nothing, as `check_owner`
    in a transaction would.
    """
    sql, params = leased_step(s, owner, w)
    if s.execute(sql, params).rowcount != 1:
        raise lease_lost(s, w.record.run_id)


def leased_step(s: Session, owner: str, w: StepWrite) -> tuple[str, tuple[Any, ...]]:
    """The statement `write_leased_step` runs and its values (for a backend that sends it
    its own way); it wrote the entry if it changed one row, else see `lease_lost`."""
    return _WRITE_LEASED_STEP, (*_step_row(s, w), w.record.run_id, owner)


def lease_lost(s: Session, run_id: str) -> LeaseLost:
    """The LeaseLost of a guarded write that changed nothing, with the run's status."""
    row = s.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
    return _lease_lost(run_id, row[0] if row else "missing")


def _step_row(s: Session, w: StepWrite) -> tuple[Any, ...]:
    """`w` as the values of a `STEP_COLS` row, payloads sealed."""
    r = w.record
    seal = s.seal
    at = (r.run_id, r.key)
    return (
        r.run_id,
        r.key,
        r.scope,
        r.position,
        r.kind.value,
        r.name,
        seal(r.digest, "steps.digest", *at),
        r.status.value,
        seal(w.output_json, "steps.output", *at),
        seal(r.error.model_dump_json(exclude_none=True), "steps.error", *at) if r.error else None,
        r.attempts,
        r.started_at,
        r.ended_at,
        r.wake_at,
        seal(pydantic_core.to_json(r.state_delta), "steps.state_delta", *at)
        if r.state_delta
        else None,
        r.blob,
        r.fallback,
        seal(pydantic_core.to_json(r.input, fallback=repr), "steps.input", *at)
        if r.input is not None
        else None,
        seal(pydantic_core.to_json(r.attempt_log), "steps.attempt_log", *at)
        if r.attempt_log
        else None,
    )


def insert_review(s: Session, review: ReviewRequest) -> bool:
    """Insert a pending review unless its id exists; True if new."""
    cur = s.execute(
        _INSERT_REVIEW,
        (
            review.id,
            review.kind,
            review.run_id,
            review.workflow,
            review.step,
            review.queue,
            s.seal(pydantic_core.to_json(review.request), "reviews.request", review.id),
            review.deadline,
            review.created_at,
        ),
    )
    return cur.rowcount == 1


def insert_escalation(s: Session, e: Escalation) -> bool:
    """Insert an open escalation unless its id exists; True if new."""
    cur = s.execute(
        _INSERT_ESCALATION,
        (
            e.id,
            e.run_id,
            e.workflow,
            e.queue,
            e.kind,
            e.step,
            e.status,
            s.seal(e.packet.model_dump_json(), "escalations.packet", e.id),
            e.created_at,
        ),
    )
    return cur.rowcount == 1


def deliver(s: Session, run: RunInfo, name: str, payload_json: bytes, now: float) -> None:
    """Queue signal `name` for `run`, waking it if it waits for that signal."""
    s.execute(
        "INSERT INTO signals (run_id, name, payload, created_at) VALUES (?, ?, ?, ?)",
        (run.id, name, s.seal(payload_json, "signals.payload", run.id, name), now),
    )
    if run.status is RunStatus.WAITING and name in run.waiting_on:
        s.execute(
            "UPDATE runs SET status='PENDING', updated_at=? WHERE id=? AND status='WAITING'",
            (now, run.id),
        )
        wake(s, "id=?", (run.id,))


def wake(s: Session, where: str, params: Sequence[Any]) -> None:
    """Wake listening workers (any host) for the runs matching `where`, once this
    transaction commits; nothing where the database cannot notify (SQLite)."""
    sql = s.dialect.wake_sql(where)
    if sql:
        s.execute(sql, params)


def audit(s: Session, actor: str, action: str, target: str, detail: Any, now: float) -> None:
    """Append one entry to the audit log."""
    sealed = s.seal(pydantic_core.to_json(detail), "audit.detail", target)
    s.execute(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        (now, actor, action, target, sealed),
    )


def run_row(s: Session, run_id: str, *, lock: bool = False) -> RunInfo | None:
    """Run `run_id` (`lock`: row-locked for the write that follows), or None."""
    sql = "SELECT {run_cols} FROM runs WHERE id=?{for_update}" if lock else RUN_BY_ID
    row = s.execute(sql, (run_id,)).fetchone()
    return s.as_run(row) if row is not None else None


RUN_BY_ID = "SELECT {run_cols} FROM runs WHERE id=?"
