"""Runs and their journals, queue leases, timers and signals: what the engine reads and
writes to execute a run (the `keel.store.journal.JournalStore` queries; worker
heartbeats are in `identity`). Leases and timers are decided on the database clock
(`{now}`, evaluated in the statement).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import pydantic_core

from keel.errors import LeaseLost, PayloadUnreadable, RunNotFound
from keel.store import _sealed
from keel.store.base import signal_refused
from keel.store.records import Claimed, RunFilter, StepWrite
from keel.store.sql.core import STEP_COLS, Session
from keel.store.sql.dialect import marks
from keel.store.sql.writes import (
    alone,
    audit,
    check_owner,
    deliver,
    insert_escalation,
    insert_review,
    insert_steps,
    lease_lost,
    run_row,
    wake,
    write_leased_step,
)
from keel.store.unit import Committed, UnitOfWork
from keel.types import RunInfo, RunStatus, StepRecord, StructuredError

# Ready runs read in one go when a worker watches ids; a longer list means a backlog.
_SCAN = 1000
_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
_NOTHING_OPENED = Committed()
# Seconds a worker's clock may differ from the database's and still count as the same
# clock: below call latency, a difference says nothing about skew.
_SAME_CLOCK = 1.0
# Due timers and expired leases, on the database clock, never a worker's.
_READY = (
    "(status='PENDING' OR (status='WAITING' AND wake_at<={now})"
    " OR (status='RUNNING' AND lease_expires<{now}))"
)
LOAD_STEPS = f"SELECT {STEP_COLS} FROM steps WHERE run_id=?"
_FINISH_LEASED = (
    "UPDATE runs SET status=?, result=?, error=?, state=?, ended_at=?, updated_at=?,"
    " lease_owner=NULL, lease_expires=NULL, wake_at=NULL, waiting_on=NULL"
    " WHERE id=? AND lease_owner=? AND status='RUNNING'"
)
# The timer is kept as a delay from the database's now: `wake_at - now` is the same on
# any clock, `wake_at` alone is as wrong as the worker's clock. Clocks that agree within
# `_SAME_CLOCK` keep `wake_at` exactly (the journal's value).
_SUSPEND = (
    "UPDATE runs SET status=?, wake_at=CASE"
    f" WHEN abs({{now}} - ?) <= {_SAME_CLOCK} THEN ? ELSE {{now}} + ? END, waiting_on=?,"
    " lease_owner=NULL, lease_expires=NULL, updated_at=?,"
    " state=COALESCE(?, state) WHERE id=?"
)


# -- runs ---------------------------------------------------------------------


def create_run(
    s: Session,
    run_id: str,
    workflow: str,
    input_json: bytes,
    now: float,
    tenant: str | None,
    session: str | None = None,
) -> tuple[RunInfo, bool]:
    """Start run `run_id` unless it exists; the run, and whether it is new."""
    with s.write():
        cur = s.execute(
            "INSERT INTO runs"
            " (id, workflow, status, input, created_at, updated_at, tenant, session)"
            " VALUES (?, ?, 'PENDING', ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (run_id, workflow, s.seal(input_json, "runs.input", run_id), now, now, tenant, session),
        )
        created = cur.rowcount == 1
        if created:
            wake(s, "id=?", (run_id,))
        run = run_row(s, run_id)
    assert run is not None
    return run, created


def creating(
    s: Session,
    run_id: str,
    workflow: str,
    input_json: bytes,
    now: float,
    tenant: str | None,
    session: str | None = None,
) -> tuple[str, tuple[Any, ...]]:
    """`create_run` as one statement, where the database can (Postgres: a data-modifying
    CTE, whose NOTIFY goes with it): its one row is the new run's `{run_cols}` and a last
    column to drop (the wake-ups sent); no row when the run existed."""
    notify = s.dialect.wake_sql("TRUE", table="created")
    return (
        "WITH created AS (INSERT INTO runs"
        " (id, workflow, status, input, created_at, updated_at, tenant, session)"
        " VALUES (?, ?, 'PENDING', ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
        " RETURNING {run_cols})"
        f", woken AS ({notify})"
        " SELECT created.*, (SELECT count(*) FROM woken) FROM created"
    ), (run_id, workflow, s.seal(input_json, "runs.input", run_id), now, now, tenant, session)


def get_run(s: Session, run_id: str) -> RunInfo | None:
    """Run `run_id`, or None."""
    return run_row(s, run_id)


def list_runs(s: Session, flt: RunFilter) -> list[RunInfo]:
    """Runs matching `flt`, newest first."""
    where: list[str] = []
    args: list[Any] = []
    if flt.status:
        where.append("status=?")
        args.append(flt.status.value)
    if flt.workflow:
        where.append("workflow=?")
        args.append(flt.workflow)
    if flt.session is not None:  # a run from before sessions is of its own (id) session
        where.append("(session=? OR (session IS NULL AND id=?))")
        args.extend((flt.session, flt.session))
    if flt.since is not None:
        where.append("created_at>=?")
        args.append(flt.since)
    if flt.until is not None:
        where.append("created_at<?")
        args.append(flt.until)
    sql = "SELECT {run_cols} FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at DESC, id LIMIT ?"
    return [s.as_run(r) for r in s.execute(sql, (*args, flt.limit)).fetchall()]


def cancel_run(s: Session, run_id: str, now: float) -> RunInfo:
    """End `run_id` as CANCELLED unless it has ended; the run as it is after."""
    with s.write():
        s.execute(
            "UPDATE runs SET status='CANCELLED', ended_at=?, updated_at=?, lease_owner=NULL,"
            " lease_expires=NULL, wake_at=NULL WHERE id=? AND status NOT IN (?, ?, ?)",
            (now, now, run_id, *_TERMINAL),
        )
        run = run_row(s, run_id)
    if run is None:
        raise RunNotFound(f"no run {run_id!r} in {s.url}", run_id=run_id)
    return run


# -- journal --------------------------------------------------------------------


def load_steps(s: Session, run_id: str) -> list[StepRecord]:
    """Every journal entry of `run_id`."""
    return [s.as_step(r) for r in s.execute(LOAD_STEPS, (run_id,)).fetchall()]


def load_blob(s: Session, digest: str) -> bytes:
    """The out-of-line output stored under `digest`."""
    row = s.execute("SELECT data FROM blobs WHERE digest=?", (digest,)).fetchone()
    if row is None:
        raise RunNotFound(f"out-of-line output {digest} is missing from {s.url}")
    data = _sealed.unseal(s.codec, bytes(row[0]), "blobs.data", (digest,))
    return data if isinstance(data, bytes) else data.encode()


def save_blob(s: Session, digest: str, data: bytes) -> None:
    """Store `data` under `digest` unless a value is stored there already."""
    if s.execute("SELECT 1 FROM blobs WHERE digest=?", (digest,)).fetchone() is not None:
        return  # content-addressed: no need to seal and send the same bytes again
    sealed = data if s.codec is None else s.seal(data, "blobs.data", digest)
    with s.write():
        s.execute(
            "INSERT INTO blobs (digest, size, data) VALUES (?, ?, ?)"
            " ON CONFLICT (digest) DO NOTHING",
            (digest, len(data), sealed),
        )


def commit(s: Session, uow: UnitOfWork) -> Committed:
    """Write a unit of work in one transaction (see `keel.store.unit`).

    The usual unit, one journal entry under a lease, is one statement instead
    (`write_leased_step`): on Postgres one round trip instead of four.
    """
    if uow.owner is not None and (w := single_step(uow)) is not None:
        write_leased_step(s, uow.owner, w)
        return _NOTHING_OPENED
    opened: list[str] = []
    with s.write():
        if uow.owner is not None:
            check_owner(s, uow.run_id, uow.owner)
        for review in uow.reviews:
            if insert_review(s, review):
                opened.append(review.id)
                detail = {"kind": review.kind, "queue": review.queue}
                audit(s, "keel", "requested", review.id, detail, review.created_at)
        for esc in uow.escalations:
            if insert_escalation(s, esc):
                opened.append(esc.id)
        insert_steps(s, uow.steps)
    return Committed(frozenset(opened)) if opened else _NOTHING_OPENED


def single_step(uow: UnitOfWork) -> StepWrite | None:
    """The unit's one journal entry when that is all it writes (`writes.alone`), else None."""
    if len(uow.steps) != 1 or uow.reviews or uow.escalations or not alone(uow.steps[0]):
        return None
    return uow.steps[0]


def take_signal(
    s: Session, run_id: str, owner: str, name: str, write: StepWrite, writes: Sequence[StepWrite]
) -> bytes | None:
    """Consume the oldest pending signal `name` into `write`, with `writes`."""
    with s.write():
        check_owner(s, run_id, owner)
        row = s.execute(
            "SELECT id, payload FROM signals WHERE run_id=? AND name=? AND consumed_by IS NULL"
            " ORDER BY id LIMIT 1{for_update}",
            (run_id, name),
        ).fetchone()
        if row is None:
            insert_steps(s, writes)
            return None
        s.execute("UPDATE signals SET consumed_by=? WHERE id=?", (write.record.key, row[0]))
        payload = (s.open(row[1], "signals.payload", run_id, name) or "").encode()
        write.output_json = payload
        insert_steps(s, [*writes, write])
    return payload


def send_signal(
    s: Session, run_id: str, name: str, payload_json: bytes, now: float, only_if_waiting: bool
) -> RunInfo:
    """Queue signal `name` for `run_id` (refused when it has ended, or does not wait)."""
    with s.write():
        run = run_row(s, run_id, lock=True)
        if run is None:
            raise RunNotFound(f"no run {run_id!r} in {s.url}", run_id=run_id)
        waited = run.status is RunStatus.WAITING and name in run.waiting_on
        if run.status.terminal or (only_if_waiting and not waited):
            (queued,) = s.execute(
                "SELECT COUNT(*) FROM signals WHERE run_id=? AND name=? AND consumed_by IS NULL",
                (run_id, name),
            ).fetchone()
            raise signal_refused(run, name, queued)
        deliver(s, run, name, payload_json, now)
    return run


# -- queue and leases -------------------------------------------------------------


def claim(
    s: Session,
    owner: str,
    lease_seconds: float,
    limit: int,
    workflows: Iterable[str],
    ids: Iterable[str] | None,
) -> list[Claimed]:
    """Lease up to `limit` ready runs of `workflows` (of `ids` only, if given)."""
    names = list(workflows)
    if not names or limit <= 0:
        return []
    if s.dialect.skip_locked:
        return _claim_skipping(s, owner, lease_seconds, limit, names, ids)
    ready = _ready(s, names, None, limit if ids is None else _SCAN)
    if ids is not None:
        wanted = set(ids)
        if len(ready) < _SCAN:  # every ready run was seen: keep the watched ones
            ready = [i for i in ready if i in wanted][:limit]
        else:  # a backlog not ours: ask by id instead (chunked under the variable limit)
            id_list, ready = list(wanted), []
            step = max(1, min(500, s.dialect.max_params - len(names) - 1))
            for i in range(0, len(id_list), step):
                ready += _ready(s, names, id_list[i : i + step], limit - len(ready))
                if len(ready) >= limit:
                    break
    if not ready:
        return []  # nothing to do: no write lock taken
    return _claim(s, owner, lease_seconds, ready)


def _ready(s: Session, names: list[str], ids: list[str] | None, limit: int) -> list[str]:
    """Claimable run ids, oldest first, read without a write lock."""
    sql = f"SELECT id FROM runs WHERE {_READY} AND workflow IN ({marks(len(names))})"
    args: list[Any] = list(names)
    if ids is not None:
        sql += f" AND id IN ({marks(len(ids))})"
        args += ids
    sql += " ORDER BY created_at LIMIT ?"
    return [r[0] for r in s.execute(sql, (*args, limit)).fetchall()]


def _claim(s: Session, owner: str, lease_seconds: float, run_ids: list[str]) -> list[Claimed]:
    # Still ready? Another worker may have claimed some since they were read.
    ids = marks(len(run_ids))
    with s.write():
        rows = s.execute(
            "UPDATE runs SET status='RUNNING', lease_owner=?, lease_expires={now} + ?,"
            " attempts=attempts+1, updated_at={now}, wake_at=NULL"
            f" WHERE id IN ({ids}) AND {_READY} RETURNING {{run_cols}}",
            (owner, lease_seconds, *run_ids),
        ).fetchall()
    return _claimed(s, owner, rows, run_ids)


def _claim_skipping(
    s: Session,
    owner: str,
    lease_seconds: float,
    limit: int,
    names: list[str],
    ids: Iterable[str] | None,
) -> list[Claimed]:
    """Pick and lease in one statement per chunk, skipping the rows another worker is
    leasing right now (`{skip_locked}`): concurrent claims on a database that runs
    them in parallel share the ready runs instead of all reaching for the oldest."""
    chunks = claim_chunks(s, names, ids)
    rows: list[Any] = []
    # One statement is atomic by itself: a transaction only when there are several.
    with s.write() if len(chunks) > 1 else contextlib.nullcontext(s):
        for chunk in chunks:
            if len(rows) >= limit:
                break
            sql, args = claiming(owner, lease_seconds, limit - len(rows), names, chunk)
            rows += s.execute(sql, args).fetchall()
    rows.sort(key=lambda r: (r[7], r[0]))  # oldest first, as `_ready` reads them
    return _claimed(s, owner, rows, [r[0] for r in rows])


def claim_chunks(s: Session, names: list[str], ids: Iterable[str] | None) -> list[list[str] | None]:
    """The id lists a `{skip_locked}` claim asks for, one statement each ([None]: any
    ready run), chunked under the database's variable limit."""
    if ids is None:
        return [None]
    id_list = list(dict.fromkeys(ids))
    step = max(1, min(500, s.dialect.max_params - len(names) - 3))
    return [id_list[i : i + step] for i in range(0, len(id_list), step)]


def claiming(
    owner: str,
    lease_seconds: float,
    limit: int,
    names: list[str],
    chunk: list[str] | None,
    array: bool = False,
) -> tuple[str, tuple[Any, ...]]:
    """One `{skip_locked}` claim statement (of the runs in `chunk`, if given): it leases
    up to `limit` ready runs of `names` and returns their `{run_cols}` rows. `array`: the
    ids go as one array value (`id = ANY(?)`, Postgres), so any number fits one statement."""
    pick = f"SELECT id FROM runs WHERE {_READY} AND workflow IN ({marks(len(names))})"
    args: list[Any] = [owner, lease_seconds, *names]
    if chunk is not None and array:
        pick += " AND id = ANY(?)"
        args.append(chunk)
    elif chunk is not None:
        pick += f" AND id IN ({marks(len(chunk))})"
        args += chunk
    pick += " ORDER BY created_at LIMIT ?{skip_locked}"
    return (
        "UPDATE runs SET status='RUNNING', lease_owner=?, lease_expires={now} + ?,"
        " attempts=attempts+1, updated_at={now}, wake_at=NULL"
        f" WHERE id IN ({pick}) RETURNING {{run_cols}}"
    ), (*args, limit)


def claimed_rows(s: Session, rows: list[Any]) -> list[Claimed]:
    """The leased `{run_cols}` rows of a `{skip_locked}` claim as records, oldest first
    (`PayloadUnreadable`: give them back with `unlease`)."""
    rows = sorted(rows, key=lambda r: (r[7], r[0]))  # oldest first, as `_ready` reads them
    return [Claimed(run=s.as_run(r), resumed=r[12] > 1) for r in rows]


def _claimed(s: Session, owner: str, rows: list[Any], run_ids: list[str]) -> list[Claimed]:
    """The leased `rows` as records (in `run_ids`' order)."""
    try:
        claimed = [Claimed(run=s.as_run(r), resumed=r[12] > 1) for r in rows]
    except PayloadUnreadable:
        unlease(s, owner, run_ids)
        raise
    order = {run_id: i for i, run_id in enumerate(run_ids)}
    return sorted(claimed, key=lambda c: order[c.run.id])


def unlease(s: Session, owner: str, run_ids: list[str]) -> None:
    """End `owner`'s leases of `run_ids` now: it cannot read them (it lacks a key, and
    stops), so a worker that has the key takes them at once."""
    with s.write():
        s.execute(
            f"UPDATE runs SET lease_expires=0 WHERE id IN ({marks(len(run_ids))})"
            " AND lease_owner=? AND status='RUNNING'",
            (*run_ids, owner),
        )


def next_due(s: Session, workflows: Iterable[str], ids: Iterable[str] | None) -> float | None:
    """Seconds until the earliest timer of a WAITING run of `workflows` is due."""
    query = due_query(s, workflows, ids)
    row = None if query is None else s.execute(*query).fetchone()
    return None if row is None else float(row[0])


def due_query(
    s: Session, workflows: Iterable[str], ids: Iterable[str] | None
) -> tuple[str, list[Any]] | None:
    """`next_due`'s one statement and its values (None: nothing to ask)."""
    names = list(workflows)
    if not names:
        return None
    # In wake_at order on the runs_ready index: the first row of a wanted workflow wins.
    sql = (
        "SELECT wake_at - {now} FROM runs WHERE status='WAITING' AND wake_at IS NOT NULL"
        f" AND workflow IN ({marks(len(names))})"
    )
    args: list[Any] = names
    if ids is not None:
        id_list = list(ids)
        if not id_list:
            return None
        if len(id_list) + len(names) < min(500, s.dialect.max_params):
            sql += f" AND id IN ({marks(len(id_list))})"
            args = [*names, *id_list]
        # More ids than one statement takes: every run of the workflows (an earlier
        # answer only wakes the worker early, never late).
    return sql + " ORDER BY wake_at LIMIT 1", args


def renew(s: Session, owner: str, run_ids: Sequence[str], lease_seconds: float) -> set[str]:
    """Extend `owner`'s leases of `run_ids`; the ids it still holds."""
    if not run_ids:
        return set()
    held: set[str] = set()
    step = min(900, s.dialect.max_params - 2)
    with s.write():
        for i in range(0, len(run_ids), step):
            chunk = list(run_ids[i : i + step])
            rows = s.execute(
                "UPDATE runs SET lease_expires={now} + ? WHERE lease_owner=?"
                f" AND status='RUNNING' AND id IN ({marks(len(chunk))}) RETURNING id",
                (lease_seconds, owner, *chunk),
            ).fetchall()
            held.update(r[0] for r in rows)
    return held


def suspend_run(
    s: Session,
    run_id: str,
    owner: str,
    wake_at: float | None,
    waiting_on: Sequence[str],
    writes: Sequence[StepWrite],
    now: float,
    state_json: bytes | None,
) -> RunStatus:
    """Park `run_id` until `wake_at` or one of `waiting_on` arrives."""
    with s.write():
        check_owner(s, run_id, owner)
        insert_steps(s, writes)
        status = RunStatus.WAITING
        if waiting_on:
            hit = s.execute(
                "SELECT 1 FROM signals WHERE run_id=? AND consumed_by IS NULL"
                f" AND name IN ({marks(len(waiting_on))}) LIMIT 1",
                (run_id, *waiting_on),
            ).fetchone()
            if hit:  # the signal raced the suspension: run again now
                status = RunStatus.PENDING
        waiting = pydantic_core.to_json(sorted(waiting_on)).decode() if waiting_on else None
        delay = None if wake_at is None else wake_at - now
        s.execute(
            _SUSPEND,
            (
                status.value,
                now,
                wake_at,
                delay,
                waiting,
                now,
                s.seal(state_json, "runs.state", run_id),
                run_id,
            ),
        )
        if status is RunStatus.PENDING or wake_at is not None:
            # Claimable now, or a new timer: idle workers re-read when the next one is due.
            wake(s, "id=?", (run_id,))
    return status


def finish_run(
    s: Session,
    run_id: str,
    owner: str,
    status: RunStatus,
    result_json: bytes | None,
    error: StructuredError | None,
    state_json: bytes | None,
    writes: Sequence[StepWrite],
    now: float,
) -> None:
    """End `run_id` with `status`, with its last journal entries.

    The lease is the update's own predicate: without entries to write, ending the run
    is one statement (on Postgres one round trip instead of four)."""
    sql, params = finishing(s, run_id, owner, status, result_json, error, state_json, now)
    if not writes:
        if s.execute(sql, params).rowcount != 1:
            raise lease_lost(s, run_id)
        return
    with s.write():
        if s.execute(sql, params).rowcount != 1:  # locks the run for the entries
            raise lease_lost(s, run_id)
        insert_steps(s, writes)


def finishing(
    s: Session,
    run_id: str,
    owner: str,
    status: RunStatus,
    result_json: bytes | None,
    error: StructuredError | None,
    state_json: bytes | None,
    now: float,
) -> tuple[str, tuple[Any, ...]]:
    """The statement ending `run_id` if `owner` holds its lease, and its values; it
    changed one row, or the lease was lost (`lease_lost`)."""
    return _FINISH_LEASED, (
        status.value,
        s.seal(result_json, "runs.result", run_id),
        s.seal(error.model_dump_json(exclude_none=True), "runs.error", run_id) if error else None,
        s.seal(state_json, "runs.state", run_id),
        now,
        now,
        run_id,
        owner,
    )


def release_run(
    s: Session, run_id: str, owner: str, writes: Sequence[StepWrite], now: float
) -> None:
    """Give `run_id` back to the queue (a worker stopping), with its last entries."""
    with s.write():
        try:
            check_owner(s, run_id, owner)
        except LeaseLost:
            return
        insert_steps(s, writes)
        s.execute(
            "UPDATE runs SET status='PENDING', lease_owner=NULL, lease_expires=NULL,"
            " updated_at=? WHERE id=? AND lease_owner=? AND status='RUNNING'",
            (now, run_id, owner),
        )
        wake(s, "id=? AND status='PENDING'", (run_id,))


def running_owners(s: Session) -> list[str]:
    """Owners holding a lease."""
    rows = s.execute(
        "SELECT DISTINCT lease_owner FROM runs WHERE status='RUNNING' AND lease_owner IS NOT NULL"
    ).fetchall()
    return [r[0] for r in rows]


def expire_owner(s: Session, owner: str) -> int:
    """Expire every lease `owner` holds; how many."""
    with s.write():
        n = s.execute(
            "UPDATE runs SET lease_expires=0 WHERE lease_owner=? AND status='RUNNING'", (owner,)
        ).rowcount
        if n:
            wake(s, "lease_owner=? AND status='RUNNING'", (owner,))
    return n
