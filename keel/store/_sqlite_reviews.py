"""The SQLite store's requests to people: reviews (approvals, low confidence, novelty,
samples), escalations, and the append-only audit log of what people decided.

The `keel.store.people.PeopleStore` of `keel.store.sqlite.SQLiteStore`; requests are
opened by `commit` (`_sqlite_core`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydantic_core

from keel.errors import Conflict, RunNotFound
from keel.store._sqlite_core import ESC_COLS, RUN_COLS, SQLiteCore, loads
from keel.store.base import AuditEntry, audit_detail
from keel.types import Escalation, EscalationPacket, ReviewRequest


def _escalation(row: Sequence[Any]) -> Escalation:
    return Escalation(
        id=row[0],
        run_id=row[1],
        workflow=row[2],
        queue=row[3],
        kind=row[4],
        step=row[5],
        status=row[6],
        packet=EscalationPacket.model_validate_json(row[7]),
        resolution=loads(row[8]),
        created_at=row[9],
        resolved_at=row[10],
        resolved_by=row[11],
    )


class SQLiteReviews(SQLiteCore):
    """Reviews, escalations and the audit log."""

    _ESC_SEALED = ((7, "escalations.packet"), (8, "escalations.resolution"))

    def _as_escalation(self, row: Sequence[Any]) -> Escalation:
        return _escalation(self._opened(row, self._ESC_SEALED, row[0]))

    # -- escalations ----------------------------------------------------------

    async def list_escalations(
        self,
        status: str | None = None,
        queue: str | None = None,
        limit: int = 100,
        *,
        run_id: str | None = None,
    ) -> list[Escalation]:
        where: list[str] = []
        args: list[Any] = []
        for col, val in (("status", status), ("queue", queue), ("run_id", run_id)):
            if val:
                where.append(f"{col}=?")
                args.append(val)
        sql = f"SELECT {ESC_COLS} FROM escalations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC LIMIT ?"
        rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [self._as_escalation(r) for r in rows]

    async def get_escalation(self, escalation_id: str) -> Escalation | None:
        row = self._db.execute(
            f"SELECT {ESC_COLS} FROM escalations WHERE id=?", (escalation_id,)
        ).fetchone()
        return self._as_escalation(row) if row else None

    async def resolve_escalation(
        self, escalation_id: str, status: str, resolution: dict[str, Any], by: str, now: float
    ) -> Escalation:
        with self._tx() as db:
            row = db.execute(
                f"SELECT {ESC_COLS} FROM escalations WHERE id=?", (escalation_id,)
            ).fetchone()
            if row is None:
                raise RunNotFound(f"no escalation {escalation_id!r} in {self.url}")
            esc = self._as_escalation(row)
            if esc.status != "open":
                raise Conflict(
                    f"escalation {escalation_id} was already {esc.status} by "
                    f"{esc.resolved_by or 'someone'}; a decision is final"
                )
            payload = pydantic_core.to_json({"status": status, **resolution, "by": by})
            db.execute(
                "UPDATE escalations SET status=?, resolution=?, resolved_at=?, resolved_by=?"
                " WHERE id=?",
                (
                    status,
                    self._seal(payload, "escalations.resolution", escalation_id),
                    now,
                    by,
                    escalation_id,
                ),
            )
            run_row = db.execute(
                f"SELECT {RUN_COLS} FROM runs WHERE id=?", (esc.run_id,)
            ).fetchone()
            run = self._as_run(run_row) if run_row is not None else None
            if run is not None and not run.status.terminal:
                self._deliver(db, run, f"escalation:{escalation_id}", payload, now)
        return esc.model_copy(
            update={
                "status": status,
                "resolution": loads(payload.decode()),
                "resolved_at": now,
                "resolved_by": by,
            }
        )

    # -- reviews (approvals, low confidence, novelty, samples) and the audit log ----

    def _review(self, row: Sequence[Any]) -> ReviewRequest:
        rid = row[0]
        return ReviewRequest(
            id=rid,
            kind=row[1],
            run_id=row[2],
            workflow=row[3],
            step=row[4],
            queue=row[5],
            status=row[6],
            request=loads(self._open(row[7], "reviews.request", rid)),
            decision=loads(self._open(row[8], "reviews.decision", rid)),
            deadline=row[9],
            created_at=row[10],
            decided_at=row[11],
            decided_by=row[12],
        )

    async def list_reviews(
        self,
        kind: str | None = None,
        status: str | None = None,
        queue: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        *,
        run_id: str | None = None,
        latest_decided: bool = False,
    ) -> list[ReviewRequest]:
        where: list[str] = []
        args: list[Any] = []
        for col, val in (
            ("kind", kind),
            ("status", status),
            ("queue", queue),
            ("workflow", workflow),
            ("run_id", run_id),
        ):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        if latest_decided:
            where.append("decided_at IS NOT NULL")
        sql = f"SELECT {self._REVIEW_COLS} FROM reviews"
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "decided_at DESC, id" if latest_decided else "created_at, id"
        sql += f" ORDER BY {order} LIMIT ?"
        return [self._review(r) for r in self._db.execute(sql, (*args, limit)).fetchall()]

    async def count_reviews(self, kinds: Sequence[str], status: str, queue: str) -> int:
        marks = ",".join("?" for _ in kinds)
        row = self._db.execute(
            f"SELECT COUNT(*) FROM reviews WHERE kind IN ({marks}) AND status=? AND queue=?",
            (*kinds, status, queue),
        ).fetchone()
        return int(row[0])

    async def get_review(self, review_id: str) -> ReviewRequest | None:
        row = self._db.execute(
            f"SELECT {self._REVIEW_COLS} FROM reviews WHERE id=?", (review_id,)
        ).fetchone()
        return self._review(row) if row else None

    async def decide_review(
        self,
        review_id: str,
        status: str,
        decision: dict[str, Any],
        by: str,
        now: float,
        signal: str | None,
    ) -> ReviewRequest:
        with self._tx() as db:
            row = db.execute(
                f"SELECT {self._REVIEW_COLS} FROM reviews WHERE id=?", (review_id,)
            ).fetchone()
            if row is None:
                raise RunNotFound(f"no review {review_id!r} in {self.url}")
            review = self._review(row)
            if review.status != "pending":
                raise Conflict(
                    f"{review.kind} {review_id} was already {review.status} by "
                    f"{review.decided_by or 'someone'}; a decision is final"
                )
            payload = pydantic_core.to_json({"status": status, **decision, "by": by})
            db.execute(
                "UPDATE reviews SET status=?, decision=?, decided_at=?, decided_by=? WHERE id=?",
                (status, self._seal(payload, "reviews.decision", review_id), now, by, review_id),
            )
            self._audit(db, by, status, review_id, audit_detail(decision), now)
            if signal is not None:
                run_row = db.execute(
                    f"SELECT {RUN_COLS} FROM runs WHERE id=?", (review.run_id,)
                ).fetchone()
                run = self._as_run(run_row) if run_row is not None else None
                if run is not None and not run.status.terminal:
                    self._deliver(db, run, signal, payload, now)
        return review.model_copy(
            update={
                "status": status,
                "decision": loads(payload.decode()),
                "decided_at": now,
                "decided_by": by,
            }
        )

    async def requeue_review(
        self, review_id: str, queue: str, deadline: float | None, now: float
    ) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE reviews SET queue=?, deadline=? WHERE id=? AND status='pending'",
                (queue, deadline, review_id),
            )
            if cur.rowcount:
                self._audit(
                    db, "keel", "escalated", review_id, {"queue": queue, "deadline": deadline}, now
                )
        return cur.rowcount == 1

    async def replace_review(self, old_id: str, review: ReviewRequest, now: float) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM reviews WHERE id=? AND status='pending'", (old_id,))
            if not cur.rowcount:
                return False
            self._insert_review(db, review)
            self._audit(db, "keel", "resampled", review.id, {"replaced": old_id}, now)
        return True

    async def count_sample(self, workflow: str, day: str) -> int:
        with self._tx() as db:
            db.execute(
                "INSERT INTO sample_counts (workflow, day, seen) VALUES (?, ?, 1)"
                " ON CONFLICT(workflow, day) DO UPDATE SET seen = seen + 1",
                (workflow, day),
            )
            (seen,) = db.execute(
                "SELECT seen FROM sample_counts WHERE workflow=? AND day=?", (workflow, day)
            ).fetchone()
        return int(seen)

    async def audit_log(self, target: str | None = None, limit: int = 200) -> list[AuditEntry]:
        sql = "SELECT id, at, actor, action, target, detail FROM audit"
        args: list[Any] = []
        if target is not None:
            sql += " WHERE target=?"
            args.append(target)
        rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [
            AuditEntry(
                id=r[0],
                at=r[1],
                actor=r[2],
                action=r[3],
                target=r[4],
                detail=loads(self._open(r[5], "audit.detail", r[4])),
            )
            for r in rows
        ]
