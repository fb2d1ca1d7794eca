"""The SQLite store's runs and their journals, queue leases, timers and signals: what
the engine reads and writes to execute a run.

The `keel.store.journal.JournalStore` of `keel.store.sqlite.SQLiteStore` (worker
heartbeats are in `_sqlite_identity`). Leases and timers are decided on the database clock
(`NOW_SQL`, evaluated in the statement).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pydantic_core

from keel.errors import LeaseLost, PayloadUnreadable, RunNotFound
from keel.store import _sealed
from keel.store._sqlite_core import RUN_COLS, STEP_COLS, SQLiteCore
from keel.store.base import Claimed, RunFilter, StepWrite, signal_refused
from keel.store.unit import Committed, UnitOfWork
from keel.types import RunInfo, RunStatus, StepRecord, StructuredError

# Ready runs read in one go when a worker watches ids; a longer list means a backlog.
_SCAN = 1000
_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
_NOTHING_OPENED = Committed()
# Seconds a worker's clock may differ from the database's and still count as the same
# clock: below call latency, a difference says nothing about skew.
_SAME_CLOCK = 1.0


class SQLiteRuns(SQLiteCore):
    """Runs, journals, queue leases, timers and signals."""

    # -- runs ---------------------------------------------------------------

    async def create_run(
        self, run_id: str, workflow: str, input_json: bytes, now: float, tenant: str | None = None
    ) -> tuple[RunInfo, bool]:
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO runs"
                " (id, workflow, status, input, created_at, updated_at, tenant)"
                " VALUES (?, ?, 'PENDING', ?, ?, ?, ?)",
                (run_id, workflow, self._seal(input_json, "runs.input", run_id), now, now, tenant),
            )
            created = cur.rowcount == 1
            row = db.execute(f"SELECT {RUN_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
        return self._as_run(row), created

    async def get_run(self, run_id: str) -> RunInfo | None:
        row = self._db.execute(f"SELECT {RUN_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
        return self._as_run(row) if row else None

    async def list_runs(self, flt: RunFilter) -> list[RunInfo]:
        where: list[str] = []
        args: list[Any] = []
        if flt.status:
            where.append("status=?")
            args.append(flt.status.value)
        if flt.workflow:
            where.append("workflow=?")
            args.append(flt.workflow)
        if flt.since is not None:
            where.append("created_at>=?")
            args.append(flt.since)
        if flt.until is not None:
            where.append("created_at<?")
            args.append(flt.until)
        sql = f"SELECT {RUN_COLS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        rows = self._db.execute(sql, (*args, flt.limit)).fetchall()
        return [self._as_run(r) for r in rows]

    async def cancel_run(self, run_id: str, now: float) -> RunInfo:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status='CANCELLED', ended_at=?, updated_at=?, lease_owner=NULL,"
                " lease_expires=NULL, wake_at=NULL WHERE id=? AND status NOT IN (?, ?, ?)",
                (now, now, run_id, *_TERMINAL),
            )
            row = db.execute(f"SELECT {RUN_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.url}", run_id=run_id)
        return self._as_run(row)

    # -- journal --------------------------------------------------------------

    async def load_steps(self, run_id: str) -> list[StepRecord]:
        rows = self._db.execute(
            f"SELECT {STEP_COLS} FROM steps WHERE run_id=?", (run_id,)
        ).fetchall()
        return [self._as_step(r) for r in rows]

    async def load_blob(self, digest: str) -> bytes:
        row = self._db.execute("SELECT data FROM blobs WHERE digest=?", (digest,)).fetchone()
        if row is None:
            raise RunNotFound(f"out-of-line output {digest} is missing from {self.url}")
        data = _sealed.unseal(self.codec, bytes(row[0]), "blobs.data", (digest,))
        return data if isinstance(data, bytes) else data.encode()

    async def commit(self, uow: UnitOfWork) -> Committed:
        opened: list[str] = []
        with self._tx() as db:
            if uow.owner is not None:
                self._check_owner(db, uow.run_id, uow.owner)
            for review in uow.reviews:
                if self._insert_review(db, review):
                    opened.append(review.id)
                    detail = {"kind": review.kind, "queue": review.queue}
                    self._audit(db, "keel", "requested", review.id, detail, review.created_at)
            for esc in uow.escalations:
                if self._insert_escalation(db, esc):
                    opened.append(esc.id)
            self._insert(db, uow.steps)
        return Committed(frozenset(opened)) if opened else _NOTHING_OPENED

    async def take_signal(
        self, run_id: str, owner: str, name: str, write: StepWrite, writes: Sequence[StepWrite]
    ) -> bytes | None:
        with self._tx() as db:
            self._check_owner(db, run_id, owner)
            row = db.execute(
                "SELECT id, payload FROM signals WHERE run_id=? AND name=? AND consumed_by IS NULL"
                " ORDER BY id LIMIT 1",
                (run_id, name),
            ).fetchone()
            if row is None:
                self._insert(db, writes)
                return None
            db.execute("UPDATE signals SET consumed_by=? WHERE id=?", (write.record.key, row[0]))
            payload = (self._open(row[1], "signals.payload", run_id, name) or "").encode()
            write.output_json = payload
            self._insert(db, [*writes, write])
        return payload

    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload_json: bytes,
        now: float,
        *,
        only_if_waiting: bool = False,
    ) -> RunInfo:
        with self._tx() as db:
            row = db.execute(f"SELECT {RUN_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in {self.url}", run_id=run_id)
            run = self._as_run(row)
            waited = run.status is RunStatus.WAITING and name in run.waiting_on
            if run.status.terminal or (only_if_waiting and not waited):
                (queued,) = db.execute(
                    "SELECT COUNT(*) FROM signals WHERE run_id=? AND name=?"
                    " AND consumed_by IS NULL",
                    (run_id, name),
                ).fetchone()
                raise signal_refused(run, name, queued)
            self._deliver(db, run, name, payload_json, now)
        return run

    # -- queue and leases -----------------------------------------------------

    async def claim(
        self,
        owner: str,
        lease_seconds: float,
        limit: int,
        workflows: Iterable[str],
        ids: Iterable[str] | None = None,
    ) -> list[Claimed]:
        names = list(workflows)
        if not names or limit <= 0:
            return []
        ready = self._ready(names, None, limit if ids is None else _SCAN)
        if ids is not None:
            wanted = set(ids)
            if len(ready) < _SCAN:  # every ready run was seen: keep the watched ones
                ready = [i for i in ready if i in wanted][:limit]
            else:  # a backlog not ours: ask by id instead (chunked under SQLite's limit)
                id_list, ready = list(wanted), []
                for i in range(0, len(id_list), 500):
                    ready += self._ready(names, id_list[i : i + 500], limit - len(ready))
                    if len(ready) >= limit:
                        break
        if not ready:
            return []  # nothing to do: no write lock taken
        return self._claim(owner, lease_seconds, ready)

    def _ready_sql(self) -> str:
        """Due timers and expired leases, on the database clock, never a worker's."""
        now = self._now_sql
        return (
            f"(status='PENDING' OR (status='WAITING' AND wake_at<={now})"
            f" OR (status='RUNNING' AND lease_expires<{now}))"
        )

    def _ready(self, names: list[str], ids: list[str] | None, limit: int) -> list[str]:
        """Claimable run ids, oldest first, read without a write lock (WAL readers don't wait)."""
        params: dict[str, Any] = {"limit": limit}
        wf = ",".join(f":w{i}" for i in range(len(names)))
        params.update({f"w{i}": n for i, n in enumerate(names)})
        sql = f"SELECT id FROM runs WHERE {self._ready_sql()} AND workflow IN ({wf})"
        if ids is not None:
            sql += " AND id IN (" + ",".join(f":i{i}" for i in range(len(ids))) + ")"
            params.update({f"i{i}": v for i, v in enumerate(ids)})
        sql += " ORDER BY created_at LIMIT :limit"
        return [r[0] for r in self._db.execute(sql, params).fetchall()]

    def _claim(self, owner: str, lease_seconds: float, run_ids: list[str]) -> list[Claimed]:
        # Still ready? Another worker may have claimed some since they were read.
        params: dict[str, Any] = {"owner": owner, "lease": lease_seconds}
        params.update({f"i{i}": v for i, v in enumerate(run_ids)})
        marks = ",".join(f":i{i}" for i in range(len(run_ids)))
        with self._tx() as db:
            rows = db.execute(
                f"UPDATE runs SET status='RUNNING', lease_owner=:owner,"
                f" lease_expires={self._now_sql} + :lease,"
                f" attempts=attempts+1, updated_at={self._now_sql}, wake_at=NULL"
                f" WHERE id IN ({marks}) AND {self._ready_sql()}"
                f" RETURNING {RUN_COLS}",
                params,
            ).fetchall()
        try:
            claimed = [Claimed(run=self._as_run(r), resumed=r[12] > 1) for r in rows]
        except PayloadUnreadable:
            # This worker lacks a key (and stops): a worker that has it takes them now.
            with self._tx() as db:
                db.execute(
                    f"UPDATE runs SET lease_expires=0 WHERE id IN ({marks})"
                    " AND lease_owner=:owner AND status='RUNNING'",
                    params,
                )
            raise
        order = {run_id: i for i, run_id in enumerate(run_ids)}
        return sorted(claimed, key=lambda c: order[c.run.id])

    async def renew(self, owner: str, run_ids: Sequence[str], lease_seconds: float) -> set[str]:
        if not run_ids:
            return set()
        held: set[str] = set()
        with self._tx() as db:
            for i in range(0, len(run_ids), 900):
                chunk = list(run_ids[i : i + 900])
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"UPDATE runs SET lease_expires={self._now_sql} + ? WHERE lease_owner=?"
                    f" AND status='RUNNING' AND id IN ({marks}) RETURNING id",
                    (lease_seconds, owner, *chunk),
                ).fetchall()
                held.update(r[0] for r in rows)
        return held

    async def suspend_run(
        self,
        run_id: str,
        owner: str,
        wake_at: float | None,
        waiting_on: Sequence[str],
        writes: Sequence[StepWrite],
        now: float,
        state_json: bytes | None = None,
    ) -> RunStatus:
        with self._tx() as db:
            self._check_owner(db, run_id, owner)
            self._insert(db, writes)
            status = RunStatus.WAITING
            if waiting_on:
                marks = ",".join("?" * len(waiting_on))
                hit = db.execute(
                    f"SELECT 1 FROM signals WHERE run_id=? AND consumed_by IS NULL"
                    f" AND name IN ({marks}) LIMIT 1",
                    (run_id, *waiting_on),
                ).fetchone()
                if hit:  # the signal raced the suspension: run again now
                    status = RunStatus.PENDING
            # The timer is kept as a delay from the database's now: `wake_at - now` is the
            # same on any clock, `wake_at` alone is as wrong as the worker's clock. Clocks
            # that agree within `_SAME_CLOCK` keep `wake_at` exactly (the journal's value).
            db_now = self._now_sql
            db.execute(
                f"UPDATE runs SET status=:status, wake_at=CASE"
                f" WHEN abs({db_now} - :now) <= {_SAME_CLOCK} THEN :wake_at"
                f" ELSE {db_now} + (:wake_at - :now) END, waiting_on=:waiting,"
                " lease_owner=NULL, lease_expires=NULL, updated_at=:now,"
                " state=COALESCE(:state, state) WHERE id=:id",
                {
                    "status": status.value,
                    "wake_at": wake_at,
                    "now": now,
                    "waiting": pydantic_core.to_json(sorted(waiting_on)).decode()
                    if waiting_on
                    else None,
                    "state": self._seal(state_json, "runs.state", run_id),
                    "id": run_id,
                },
            )
        return status

    async def finish_run(
        self,
        run_id: str,
        owner: str,
        status: RunStatus,
        result_json: bytes | None,
        error: StructuredError | None,
        state_json: bytes | None,
        writes: Sequence[StepWrite],
        now: float,
    ) -> None:
        with self._tx() as db:
            self._check_owner(db, run_id, owner)
            self._insert(db, writes)
            db.execute(
                "UPDATE runs SET status=?, result=?, error=?, state=?, ended_at=?, updated_at=?,"
                " lease_owner=NULL, lease_expires=NULL, wake_at=NULL, waiting_on=NULL WHERE id=?",
                (
                    status.value,
                    self._seal(result_json, "runs.result", run_id),
                    self._seal(error.model_dump_json(exclude_none=True), "runs.error", run_id)
                    if error
                    else None,
                    self._seal(state_json, "runs.state", run_id),
                    now,
                    now,
                    run_id,
                ),
            )

    async def release_run(
        self, run_id: str, owner: str, writes: Sequence[StepWrite], now: float
    ) -> None:
        with self._tx() as db:
            try:
                self._check_owner(db, run_id, owner)
            except LeaseLost:
                return
            self._insert(db, writes)
            db.execute(
                "UPDATE runs SET status='PENDING', lease_owner=NULL, lease_expires=NULL,"
                " updated_at=? WHERE id=? AND lease_owner=? AND status='RUNNING'",
                (now, run_id, owner),
            )

    async def running_owners(self) -> list[str]:
        rows = self._db.execute(
            "SELECT DISTINCT lease_owner FROM runs"
            " WHERE status='RUNNING' AND lease_owner IS NOT NULL"
        ).fetchall()
        return [r[0] for r in rows]

    async def expire_owner(self, owner: str) -> int:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE runs SET lease_expires=0 WHERE lease_owner=? AND status='RUNNING'", (owner,)
            )
        return cur.rowcount
