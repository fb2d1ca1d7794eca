"""Drift observations (the `keel.store.drift.DriftStore` queries): `drift_monitors`, each
monitor's settings as JSON text, and `drift_values`, one row per run and monitor,
indexed by monitor and the time its run ended (windows of the newest N, a pinned
reference range)."""

from __future__ import annotations

import json

from keel.store.drift import DriftMonitorSpec, DriftValue
from keel.store.sql.core import Session


def put_drift_monitors(s: Session, specs: list[DriftMonitorSpec]) -> None:
    with s.write():
        for m in specs:
            s.execute(
                "INSERT INTO drift_monitors (workflow, monitor, spec, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (workflow, monitor)"
                " DO UPDATE SET spec=excluded.spec, updated_at=excluded.updated_at",
                (m.workflow, m.monitor, json.dumps(m.spec, sort_keys=True), m.updated_at),
            )


def list_drift_monitors(s: Session, workflow: str | None) -> list[DriftMonitorSpec]:
    where, args = ("WHERE workflow=?", (workflow,)) if workflow is not None else ("", ())
    rows = s.execute(
        f"SELECT workflow, monitor, spec, updated_at FROM drift_monitors {where}"
        " ORDER BY workflow, monitor",
        args,
    ).fetchall()
    return [DriftMonitorSpec(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]


def add_drift_values(s: Session, values: list[DriftValue]) -> int:
    added = 0
    with s.write():
        for v in values:
            cur = s.execute(
                "INSERT INTO drift_values (workflow, monitor, run_id, at, value, label)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workflow, monitor, run_id) DO NOTHING",
                (v.workflow, v.monitor, v.run_id, v.at, v.value, v.label),
            )
            added += max(cur.rowcount, 0)
    return added


def drift_values(
    s: Session,
    workflow: str,
    monitor: str,
    limit: int,
    before: tuple[float, int] | None,
    start: float | None,
    end: float | None,
) -> list[DriftValue]:
    # Ordered by when the run ended, not when it was observed: observations are written
    # in the background by many workers, and a backfill writes late ones. The newest
    # first with LIMIT walks the (workflow, monitor, at, seq) index backwards: a window
    # costs its own size, however many observations the monitor has.
    where = ["workflow=?", "monitor=?"]
    args: list[object] = [workflow, monitor]
    if before is not None:
        where.append("(at<? OR (at=? AND seq<?))")
        args += [before[0], before[0], before[1]]
    for cond, arg in (("at>=?", start), ("at<?", end)):
        if arg is not None:
            where.append(cond)
            args.append(arg)
    rows = s.execute(
        "SELECT seq, workflow, monitor, run_id, at, value, label FROM drift_values"
        f" WHERE {' AND '.join(where)} ORDER BY at DESC, seq DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [DriftValue(r[1], r[2], r[3], r[4], r[5], r[6], r[0]) for r in reversed(rows)]
