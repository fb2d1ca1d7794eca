"""One process measuring what a journaled step's commit costs through each SQL layer.

The statements are the ones a Keel step commit makes on SQLite: take the write lock,
check the run's lease, insert (or replace) the step's row, touch the run, commit. The
same unit of work goes through raw `sqlite3`, SQLAlchemy Core with `text()` statements,
and SQLAlchemy Core constructs (compiled once, then served from its statement cache).
Variants are interleaved round by round so machine noise hits them alike.

Usage: python sql_layer_child.py --dir DIR [--commits N] [--rounds R]
Prints one JSON line: microseconds per commit for each variant that could run.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import time
from collections.abc import Callable

SCHEMA = [
    "CREATE TABLE runs (id TEXT PRIMARY KEY, lease_owner TEXT, lease_expires REAL,"
    " updated_at REAL NOT NULL)",
    "CREATE TABLE steps (run_id TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL,"
    " status TEXT NOT NULL, output TEXT, started_at REAL NOT NULL, ended_at REAL,"
    " PRIMARY KEY (run_id, key))",
]
LEASE = "SELECT lease_owner FROM runs WHERE id = ? AND lease_expires > ?"
STEP = (
    "INSERT INTO steps (run_id, key, kind, status, output, started_at, ended_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, key) DO UPDATE SET"
    " status = excluded.status, output = excluded.output, ended_at = excluded.ended_at"
)
TOUCH = "UPDATE runs SET updated_at = ? WHERE id = ?"
OUTPUT = '{"value": "' + "x" * 200 + '"}'


def _prepare(path: str) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    for stmt in SCHEMA:
        db.execute(stmt)
    db.execute("INSERT INTO runs VALUES ('r1', 'w1', 1e12, 0)")
    db.commit()
    db.close()


def raw(path: str) -> Callable[[int], None]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")

    def commit(i: int) -> None:
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        if db.execute(LEASE, ("r1", now)).fetchone() is None:
            raise RuntimeError("lease lost")
        db.execute(STEP, ("r1", f"s#{i}", "tool", "ok", OUTPUT, now, now))
        db.execute(TOUCH, (now, "r1"))
        db.execute("COMMIT")

    return commit


def _engine(path: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine, event

    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _connect(conn, _record):  # type: ignore[no-untyped-def]
        conn.isolation_level = None  # SQLAlchemy's documented recipe for BEGIN IMMEDIATE
        conn.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def sa_text(path: str) -> Callable[[int], None]:
    from sqlalchemy import text

    engine = _engine(path)
    conn = engine.connect()
    lease = text(LEASE.replace("id = ?", "id = :id").replace("> ?", "> :now"))
    step = text(
        STEP.replace("VALUES (?, ?, ?, ?, ?, ?, ?)", "VALUES (:r, :k, :kind, :st, :o, :s, :e)")
    )
    touch = text("UPDATE runs SET updated_at = :now WHERE id = :id")

    def commit(i: int) -> None:
        now = time.time()
        with conn.begin():
            if conn.execute(lease, {"id": "r1", "now": now}).first() is None:
                raise RuntimeError("lease lost")
            conn.execute(
                step,
                {
                    "r": "r1",
                    "k": f"s#{i}",
                    "kind": "tool",
                    "st": "ok",
                    "o": OUTPUT,
                    "s": now,
                    "e": now,
                },
            )
            conn.execute(touch, {"now": now, "id": "r1"})

    return commit


def sa_core(path: str) -> Callable[[int], None]:
    from sqlalchemy import Column, Float, MetaData, String, Table, Text, bindparam, select, update
    from sqlalchemy.dialects.sqlite import insert

    md = MetaData()
    runs = Table(
        "runs",
        md,
        Column("id", String, primary_key=True),
        Column("lease_owner", String),
        Column("lease_expires", Float),
        Column("updated_at", Float),
    )
    steps = Table(
        "steps",
        md,
        Column("run_id", String, primary_key=True),
        Column("key", String, primary_key=True),
        Column("kind", String),
        Column("status", String),
        Column("output", Text),
        Column("started_at", Float),
        Column("ended_at", Float),
    )
    engine = _engine(path)
    conn = engine.connect()
    ins = insert(steps)
    upsert = ins.on_conflict_do_update(
        index_elements=[steps.c.run_id, steps.c.key],
        set_={
            "status": ins.excluded.status,
            "output": ins.excluded.output,
            "ended_at": ins.excluded.ended_at,
        },
    )

    # Built once with bound parameters: the layer's best case (no per-call construction).
    lease = select(runs.c.lease_owner).where(
        runs.c.id == bindparam("rid"), runs.c.lease_expires > bindparam("now")
    )
    touch = update(runs).where(runs.c.id == bindparam("rid")).values(updated_at=bindparam("now"))

    def commit(i: int) -> None:
        now = time.time()
        with conn.begin():
            if conn.execute(lease, {"rid": "r1", "now": now}).first() is None:
                raise RuntimeError("lease lost")
            conn.execute(
                upsert,
                {
                    "run_id": "r1",
                    "key": f"s#{i}",
                    "kind": "tool",
                    "status": "ok",
                    "output": OUTPUT,
                    "started_at": now,
                    "ended_at": now,
                },
            )
            conn.execute(touch, {"rid": "r1", "now": now})

    return commit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    variants: dict[str, Callable[[int], None]] = {}
    versions: dict[str, str] = {"sqlite": sqlite3.sqlite_version}
    for name, make in (
        ("raw sqlite3", raw),
        ("SQLAlchemy text()", sa_text),
        ("SQLAlchemy Core", sa_core),
    ):
        path = os.path.join(args.dir, name.split()[-1].strip("()") + ".db")
        _prepare(path)
        try:
            variants[name] = make(path)
        except ImportError:
            continue
    try:
        import sqlalchemy

        versions["sqlalchemy"] = sqlalchemy.__version__
    except ImportError:
        pass
    timings: dict[str, list[float]] = {name: [] for name in variants}
    base = 0
    for _ in range(args.rounds + 1):  # the first round warms caches and is dropped
        for name, commit in variants.items():
            t0 = time.perf_counter()
            for i in range(base, base + args.commits):
                commit(i)
            timings[name].append((time.perf_counter() - t0) / args.commits * 1e6)
        base += args.commits
    result = {n: round(statistics.median(t[1:]), 2) for n, t in timings.items()}
    print(json.dumps({"ok": True, "us_per_commit": result, "versions": versions}))


if __name__ == "__main__":
    main()
