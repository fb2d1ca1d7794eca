"""DBOS side of the benchmark; runs inside bench/.venvs/dbos.

Settings: DBOS defaults on an SQLite system database (`system_database_url`
= sqlite file). DBOS leaves SQLite in its default rollback-journal mode
(journal_mode=DELETE, synchronous=FULL) and opens IMMEDIATE transactions.
Without Postgres LISTEN/NOTIFY, `recv` is woken by polling the database
(`notification_listener_polling_interval_sec`, default 1 s), which we keep.

With `--pg URL`, DBOS's own Postgres system database at that URL (its
defaults: SQLAlchemy on psycopg 3, schema `dbos`, LISTEN/NOTIFY wake-ups).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _common import NAP_S, SIGNAL_PAYLOAD, W1_BLOB, W1_STEPS, W3_STEPS, main
from dbos import DBOS, DBOSConfig, WorkflowHandleAsync

_SLEEPS = "operation_outputs WHERE function_name = 'DBOS.sleep'"  # recv's durable timeouts
WAIT_TIMEOUT_S = 3600.0  # longer than any run of the bench: W4 must wait on the signal


@DBOS.step()
async def noop(i: int) -> int:
    return i


@DBOS.step()
async def nap(i: int) -> int:
    await asyncio.sleep(NAP_S)
    return i


@DBOS.workflow()
async def sequential(blob: str, n: int) -> int:
    # `blob` is the ~1 KB of workflow state: DBOS stores it once as the input.
    for i in range(n):
        await noop(i)
    return n


@DBOS.workflow()
async def fan_out(n: int) -> int:
    # Steps started together in a fixed order keep DBOS's step ids deterministic.
    results = await asyncio.gather(*(nap(i) for i in range(n)))
    return sum(results)


@DBOS.workflow()
async def wait_for_go() -> str:
    payload: str = await DBOS.recv_async("go", timeout_seconds=WAIT_TIMEOUT_S)
    return payload


class DBOSAdapter:
    def __init__(self) -> None:
        self._db: Path | None = None
        self._pg: str | None = None

    async def open(self, workdir: Path, pg: str | None = None) -> None:
        self._db, self._pg = workdir / "dbos.sqlite", pg
        config: DBOSConfig = {
            "name": "keel-bench",
            "system_database_url": pg or f"sqlite:///{self._db}",
            "log_level": "WARNING",  # keep log writes out of the bytes-written figure
        }
        DBOS(config=config)
        DBOS.launch()

    async def close(self) -> None:
        DBOS.destroy(destroy_registry=False)

    async def w1(self) -> None:
        await sequential(W1_BLOB, W1_STEPS)

    async def w2(self, n: int) -> int:
        return await fan_out(n)

    async def w3(self) -> None:
        handle = await DBOS.start_workflow_async(sequential, "", W3_STEPS)
        await handle.get_result()

    async def w4_start(self, i: int) -> WorkflowHandleAsync[str]:
        return await DBOS.start_workflow_async(wait_for_go)

    async def w4_wait_suspended(self, handles: Sequence[Any]) -> None:
        # A run is parked once recv has durably recorded its timeout (the
        # "DBOS.sleep" operation row); only then is it waiting on the signal.
        ids = {h.get_workflow_id() for h in handles}
        while len(self._parked(ids)) < len(ids):
            await asyncio.sleep(0.05)

    def _parked(self, ids: set[str]) -> set[str]:
        if self._pg:
            import psycopg

            with psycopg.connect(self._pg, autocommit=True) as pg:
                rows = pg.execute(f"SELECT workflow_uuid FROM dbos.{_SLEEPS}").fetchall()
            return ids & {r[0] for r in rows}
        assert self._db is not None
        conn = sqlite3.connect(self._db, timeout=30)
        try:
            rows = conn.execute(f"SELECT workflow_uuid FROM {_SLEEPS}").fetchall()
        finally:
            conn.close()
        return ids & {r[0] for r in rows}

    async def w4_resume(self, handle: Any) -> None:
        await DBOS.send_async(handle.get_workflow_id(), SIGNAL_PAYLOAD, topic="go")
        if await handle.get_result() != SIGNAL_PAYLOAD:
            raise AssertionError("run finished without the signal payload")


def _versions() -> dict[str, str]:
    return {"dbos": version("dbos"), "sqlalchemy": version("sqlalchemy")}


if __name__ == "__main__":
    logging.getLogger("dbos").setLevel(logging.WARNING)
    main("dbos", DBOSAdapter, _versions)
