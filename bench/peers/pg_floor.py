"""The Postgres floor for W1: one bare psycopg `INSERT` + `COMMIT` per step.

Runs with the repo's venv (psycopg 3, as Keel's store uses). W1's shape, with no
engine: a "run" is 20 steps, and each step inserts one small row (a step's
key and its result) in a transaction of its own and commits it, on one
connection, one step after another. This is what any durable engine must at
least pay per step on this server; Keel's W1 is judged against it.

    python bench/peers/pg_floor.py w1 --dir TMP --pg URL [--quick] [--variant pool]

Variants:
- `bare` (the floor): one sync connection, on the calling thread.
- `pool`: the same statements the way Keel's store makes a call: from asyncio,
  a hop to a worker thread (`run_in_executor`) that checks a connection out
  of a psycopg_pool `ConnectionPool`; the difference to `bare` is what that
  architecture costs per step, before any of Keel's own SQL.
- `autocommit`: the INSERT alone on an autocommit connection, one round trip
  (psycopg's default above sends BEGIN, the INSERT and COMMIT: three). What a
  step costs at best if its journal write is a single statement.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from itertools import count
from pathlib import Path
from typing import Any

import psycopg
from _common import W1_STEPS, main
from psycopg_pool import ConnectionPool

_TABLE = (
    "CREATE TABLE IF NOT EXISTS floor_steps (run_id BIGINT, step INT, output BYTEA,"
    " PRIMARY KEY (run_id, step))"
)
_INSERT = "INSERT INTO floor_steps (run_id, step, output) VALUES (%s, %s, %s)"
_OUTPUT = b'{"result": 0}'  # about what a no-op step's journaled result holds
_POOL = 8  # Keel's default pool size


class _Unsupported:
    async def w2(self, n: int) -> int:
        raise NotImplementedError("the floor measures W1 only")

    async def w3(self) -> None:
        raise NotImplementedError("the floor measures W1 only")

    async def w4_start(self, i: int) -> Any:
        raise NotImplementedError("the floor measures W1 only")

    async def w4_wait_suspended(self, handles: Sequence[Any]) -> None:
        raise NotImplementedError("the floor measures W1 only")

    async def w4_resume(self, handle: Any) -> None:
        raise NotImplementedError("the floor measures W1 only")


def _step(conn: psycopg.Connection[Any], run: int, step: int) -> None:
    conn.execute(_INSERT, (run, step, _OUTPUT))
    conn.commit()


class BareFloor(_Unsupported):
    """INSERT + COMMIT per step on one sync connection (psycopg's default: the first
    statement opens the transaction)."""

    def __init__(self) -> None:
        self._conn: psycopg.Connection[Any] | None = None
        self._runs = count()

    async def open(self, workdir: Path, pg: str | None = None) -> None:
        if not pg:
            raise ValueError("the floor needs --pg URL")
        self._conn = psycopg.connect(pg)
        self._conn.execute(_TABLE)
        self._conn.commit()

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    async def w1(self) -> None:
        assert self._conn is not None
        run = next(self._runs)
        for i in range(W1_STEPS):
            _step(self._conn, run, i)


class AutocommitFloor(BareFloor):
    """The INSERT alone, committed by the server as it runs: one round trip per step."""

    async def open(self, workdir: Path, pg: str | None = None) -> None:
        await super().open(workdir, pg)
        assert self._conn is not None
        self._conn.autocommit = True

    async def w1(self) -> None:
        assert self._conn is not None
        run = next(self._runs)
        for i in range(W1_STEPS):
            self._conn.execute(_INSERT, (run, i, _OUTPUT))


class PoolFloor(_Unsupported):
    """The same step, each a call as Keel's store makes it: thread hop + pool checkout."""

    def __init__(self) -> None:
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._threads = ThreadPoolExecutor(max_workers=_POOL)
        self._runs = count()

    async def open(self, workdir: Path, pg: str | None = None) -> None:
        if not pg:
            raise ValueError("the floor needs --pg URL")
        with psycopg.connect(pg) as conn:
            conn.execute(_TABLE)
        self._pool = ConnectionPool(pg, min_size=1, max_size=_POOL, open=True)

    async def close(self) -> None:
        self._threads.shutdown()
        if self._pool is not None:
            self._pool.close()

    def _call(self, run: int, step: int) -> None:
        assert self._pool is not None
        with self._pool.connection() as conn:
            _step(conn, run, step)

    async def w1(self) -> None:
        loop = asyncio.get_running_loop()
        run = next(self._runs)
        for i in range(W1_STEPS):
            await loop.run_in_executor(self._threads, self._call, run, i)


VARIANTS = {"bare": BareFloor, "pool": PoolFloor, "autocommit": AutocommitFloor}


def _versions() -> dict[str, str]:
    return {"psycopg": version("psycopg"), "psycopg-pool": version("psycopg-pool")}


def _variant(argv: list[str]) -> str:
    """Take `--variant NAME` out of argv (the shared parser does not know it)."""
    if "--variant" not in argv:
        return "bare"
    i = argv.index("--variant")
    name = argv[i + 1] if i + 1 < len(argv) else ""
    if name not in VARIANTS:
        sys.exit(f"--variant: choose from {', '.join(VARIANTS)}")
    del argv[i : i + 2]
    return name


if __name__ == "__main__":
    variant = _variant(sys.argv)
    main(f"floor-{variant}", VARIANTS[variant], _versions, workloads=("w1",))
