"""Requests to people: reviews (approvals, low confidence, novelty, samples),
escalations, and the append-only audit log of what people decided (the
`keel.store.people.PeopleStore` queries; requests are opened by `runs.commit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydantic_core

from keel.errors import Conflict, RunNotFound
from keel.store.base import audit_detail
from keel.store.records import AuditEntry
from keel.store.sql.core import ESC_COLS, REVIEW_COLS, Session, loads
from keel.store.sql.dialect import marks
from keel.store.sql.writes import audit, deliver, insert_review, run_row
from keel.types import Escalation, EscalationPacket, ReviewRequest

_ESC_SEALED = ((7, "escalations.packet"), (8, "escalations.resolution"))
_ESC_BY_ID = f"SELECT {ESC_COLS} FROM escalations WHERE id=?"
_REVIEW_BY_ID = f"SELECT {REVIEW_COLS} FROM reviews WHERE id=?"


def _escalation(s: Session, row: Sequence[Any]) -> Escalation:
    row = s.opened(row, _ESC_SEALED, row[0])
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


def _review(s: Session, row: Sequence[Any]) -> ReviewRequest:
    rid = row[0]
    return ReviewRequest(
        id=rid,
        kind=row[1],
        run_id=row[2],
        workflow=row[3],
        step=row[4],
        queue=row[5],
        status=row[6],
        request=loads(s.open(row[7], "reviews.request", rid)),
        decision=loads(s.open(row[8], "reviews.decision", rid)),
        deadline=row[9],
        created_at=row[10],
        decided_at=row[11],
        decided_by=row[12],
    )


# -- escalations ------------------------------------------------------------------


def list_escalations(
    s: Session, status: str | None, queue: str | None, limit: int, run_id: str | None
) -> list[Escalation]:
    """Escalations matching the filters, newest first."""
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
    return [_escalation(s, r) for r in s.execute(sql, (*args, limit)).fetchall()]


def get_escalation(s: Session, escalation_id: str) -> Escalation | None:
    """Escalation `escalation_id`, or None."""
    row = s.execute(_ESC_BY_ID, (escalation_id,)).fetchone()
    return _escalation(s, row) if row else None


def resolve_escalation(
    s: Session, escalation_id: str, status: str, resolution: dict[str, Any], by: str, now: float
) -> Escalation:
    """Record a person's resolution (final) and signal the waiting run."""
    with s.write():
        row = s.execute(_ESC_BY_ID + "{for_update}", (escalation_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no escalation {escalation_id!r} in {s.url}")
        esc = _escalation(s, row)
        if esc.status != "open":
            raise Conflict(
                f"escalation {escalation_id} was already {esc.status} by "
                f"{esc.resolved_by or 'someone'}; a decision is final"
            )
        payload = pydantic_core.to_json({"status": status, **resolution, "by": by})
        s.execute(
            "UPDATE escalations SET status=?, resolution=?, resolved_at=?, resolved_by=?"
            " WHERE id=?",
            (
                status,
                s.seal(payload, "escalations.resolution", escalation_id),
                now,
                by,
                escalation_id,
            ),
        )
        run = run_row(s, esc.run_id, lock=True)
        if run is not None and not run.status.terminal:
            deliver(s, run, f"escalation:{escalation_id}", payload, now)
    return esc.model_copy(
        update={
            "status": status,
            "resolution": loads(payload.decode()),
            "resolved_at": now,
            "resolved_by": by,
        }
    )


# -- reviews (approvals, low confidence, novelty, samples) and the audit log ----------


def list_reviews(
    s: Session,
    kind: str | None,
    status: str | None,
    queue: str | None,
    workflow: str | None,
    limit: int,
    run_id: str | None,
    latest_decided: bool,
) -> list[ReviewRequest]:
    """Reviews matching the filters, oldest first (`latest_decided`: latest decided)."""
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
    sql = f"SELECT {REVIEW_COLS} FROM reviews"
    if where:
        sql += " WHERE " + " AND ".join(where)
    order = "decided_at DESC, id" if latest_decided else "created_at, id"
    sql += f" ORDER BY {order} LIMIT ?"
    return [_review(s, r) for r in s.execute(sql, (*args, limit)).fetchall()]


def count_reviews(s: Session, kinds: Sequence[str], status: str, queue: str) -> int:
    """How many reviews of `kinds` are in `status` on `queue`."""
    row = s.execute(
        f"SELECT COUNT(*) FROM reviews WHERE kind IN ({marks(len(kinds))})"
        " AND status=? AND queue=?",
        (*kinds, status, queue),
    ).fetchone()
    return int(row[0])


def get_review(s: Session, review_id: str) -> ReviewRequest | None:
    """Review `review_id`, or None."""
    row = s.execute(_REVIEW_BY_ID, (review_id,)).fetchone()
    return _review(s, row) if row else None


def decide_review(
    s: Session,
    review_id: str,
    status: str,
    decision: dict[str, Any],
    by: str,
    now: float,
    signal: str | None,
) -> ReviewRequest:
    """Record a person's decision (final, audited) and signal the waiting run."""
    with s.write():
        row = s.execute(_REVIEW_BY_ID + "{for_update}", (review_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no review {review_id!r} in {s.url}")
        review = _review(s, row)
        if review.status != "pending":
            raise Conflict(
                f"{review.kind} {review_id} was already {review.status} by "
                f"{review.decided_by or 'someone'}; a decision is final"
            )
        payload = pydantic_core.to_json({"status": status, **decision, "by": by})
        s.execute(
            "UPDATE reviews SET status=?, decision=?, decided_at=?, decided_by=? WHERE id=?",
            (status, s.seal(payload, "reviews.decision", review_id), now, by, review_id),
        )
        audit(s, by, status, review_id, audit_detail(decision), now)
        if signal is not None:
            run = run_row(s, review.run_id, lock=True)
            if run is not None and not run.status.terminal:
                deliver(s, run, signal, payload, now)
    return review.model_copy(
        update={
            "status": status,
            "decision": loads(payload.decode()),
            "decided_at": now,
            "decided_by": by,
        }
    )


def requeue_review(
    s: Session, review_id: str, queue: str, deadline: float | None, now: float
) -> bool:
    """Move a pending review to `queue` with a new deadline (audited)."""
    with s.write():
        cur = s.execute(
            "UPDATE reviews SET queue=?, deadline=? WHERE id=? AND status='pending'",
            (queue, deadline, review_id),
        )
        if cur.rowcount:
            detail = {"queue": queue, "deadline": deadline}
            audit(s, "keel", "escalated", review_id, detail, now)
    return cur.rowcount == 1


def replace_review(s: Session, old_id: str, review: ReviewRequest, now: float) -> bool:
    """Swap a pending review for `review` (audited); False if it was no longer pending."""
    with s.write():
        cur = s.execute("DELETE FROM reviews WHERE id=? AND status='pending'", (old_id,))
        if not cur.rowcount:
            return False
        insert_review(s, review)
        audit(s, "keel", "resampled", review.id, {"replaced": old_id}, now)
    return True


def count_sample(s: Session, workflow: str, day: str) -> int:
    """Count one more sampling candidate of `workflow` on `day`; the count."""
    with s.write():
        s.execute(
            "INSERT INTO sample_counts (workflow, day, seen) VALUES (?, ?, 1)"
            " ON CONFLICT (workflow, day) DO UPDATE SET seen = sample_counts.seen + 1",
            (workflow, day),
        )
        (seen,) = s.execute(
            "SELECT seen FROM sample_counts WHERE workflow=? AND day=?", (workflow, day)
        ).fetchone()
    return int(seen)


def audit_log(s: Session, target: str | None, limit: int) -> list[AuditEntry]:
    """Audit entries (of `target`), oldest first."""
    sql = "SELECT id, at, actor, action, target, detail FROM audit"
    args: list[Any] = []
    if target is not None:
        sql += " WHERE target=?"
        args.append(target)
    rows = s.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
    return [
        AuditEntry(
            id=r[0],
            at=r[1],
            actor=r[2],
            action=r[3],
            target=r[4],
            detail=loads(s.open(r[5], "audit.detail", r[4])),
        )
        for r in rows
    ]
