"""Keel's store as the record of Temporal runs: the run row, its journal, its usage.

Temporal's history is what a run replays from; Keel's store keeps what everything
around the run reads (`keel runs/show/trace/costs`, the console): the run row, written
when the run is started, a journal entry per effect written by the activity that ran
it (so it is written once per attempt, never by a replay: traces built from it have no
duplicate spans), and the run's end, written when Keel learns it (`result()`, `keel
runs`). The row is leased to `OWNER` for good, so no Keel engine worker ever claims it.

Example:
    await open_run(app.store, run_id, "triage", data, tenant=None, session=None)
    await record(app.store, Entry(run_id, "lookup#0", "", 0, StepKind.TOOL, ...))
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError, KeelError, StoreError
from keel.store import StepWrite, UnitOfWork, Usage
from keel.types import RunInfo, StepKind, StepRecord, StepStatus, StructuredError

if TYPE_CHECKING:
    from keel.store import Store

OWNER = "temporal"  # the lease owner of every run Temporal executes
_FOREVER = 100 * 365 * 86400.0  # Temporal holds the run's lease: it never expires
_INLINE = 256 * 1024  # larger outputs go out of line (the store's blob table)
_log = logging.getLogger("keel.temporal")


def on_temporal(run: RunInfo) -> bool:
    """Whether Temporal executes `run` (its row is leased to Temporal)."""
    return run.lease_owner == OWNER


async def open_run(
    store: Store,
    run_id: str,
    workflow: str,
    data: bytes,
    *,
    tenant: str | None,
    session: str | None,
) -> bool:
    """Record run `run_id` as started on Temporal; False when the store already had it."""
    _, created = await store.create_run(run_id, workflow, data, time.time(), tenant, session)
    if not created:
        return False
    claimed = await store.claim(OWNER, _FOREVER, 1, [workflow], [run_id])
    if not claimed:
        raise ConfigError(
            f"run {run_id!r} was taken by a Keel engine worker before Temporal could hold "
            "it: do not run Keel's own workers for workflows hosted on Temporal against "
            "the same store",
            run_id=run_id,
        )
    return True


@dataclass(slots=True)
class Entry:
    """One journal entry an activity writes for the effect it ran."""

    run_id: str
    key: str
    scope: str
    position: int
    kind: StepKind
    name: str
    digest: str
    started: float
    attempts: int
    data: bytes | None = None  # the output's JSON
    error: StructuredError | None = None
    usage: Usage | None = None
    input: Any = None
    fallback: str | None = None
    pending: bool = False  # an intent, or a failed attempt that will be retried
    out_of_line: bool = False  # the output goes to the blob table whatever its size


async def record(store: Store, entry: Entry, *, strict: bool = False) -> None:
    """Write `entry` to Keel's store; it is there when this returns. Temporal's history
    holds the outcome whatever happens here, so a store that fails is logged, never the
    step's failure; `strict` raises instead (an intent: the effect must not run
    unrecorded). Entries of concurrent activities share one transaction (`_Writer`)."""
    rec = StepRecord(
        run_id=entry.run_id,
        key=entry.key,
        scope=entry.scope,
        position=entry.position,
        kind=entry.kind,
        name=entry.name,
        digest=entry.digest,
        status=_status(entry),
        error=entry.error,
        attempts=entry.attempts,
        started_at=entry.started,
        ended_at=time.time(),
        input=entry.input,
        fallback=entry.fallback,
    )
    write = step_write(rec, entry.data, entry.usage, out_of_line=entry.out_of_line)
    try:
        await _writer(store).write(write)
    except (StoreError, KeelError, OSError) as exc:
        if strict:
            raise
        _log.warning(
            "step %s of run %s ran on Temporal but could not be written to Keel's store "
            "(keel show/trace/costs will miss it): %s",
            entry.key,
            entry.run_id,
            exc,
        )


def step_write(
    rec: StepRecord, data: bytes | None, usage: Usage | None = None, *, out_of_line: bool = False
) -> StepWrite:
    """`rec` with its output's JSON `data` as the store writes it: a large output (or one
    `out_of_line`) in the blob table, under its SHA-256.

    Example:
        await store.commit(UnitOfWork(run_id, None, steps=[step_write(rec, b'"hi"')]))
    """
    if data is not None and (out_of_line or len(data) > _INLINE):
        rec.blob = hashlib.sha256(data).hexdigest()
        return StepWrite(rec, None, data, usage=usage)
    return StepWrite(rec, data, usage=usage)


class _Writer:
    """Group commit for one store: entries that activities of this worker process hand
    in while a write is under way (or in the same turn of the event loop) go to the
    store in ONE transaction, and each `write` returns once its own entry is committed,
    so an entry is always in the store before Temporal learns that its step ended.

    A transaction's begin and commit cost more than its rows (bench/README.md), so a
    busy worker saves most of them. The first writer writes the batch itself (no task,
    no future: the sequential case stays cheap); it waits one turn of the event loop for
    others to join only while other activities run (`running()`), and the others wait
    for it. A batch the store refuses is written again entry by entry, so one bad entry
    fails alone; writing an entry twice is harmless (the store upserts on run and key).
    """

    __slots__ = ("_busy", "_drainer", "_loop", "_pending", "_store")

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._pending: list[tuple[StepWrite, asyncio.Future[None]]] = []
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None  # held: the loop keeps weak refs

    async def write(self, write: StepWrite) -> None:
        if self._busy:  # join the next batch; written even if this activity is cancelled
            done: asyncio.Future[None] = self._loop.create_future()
            self._pending.append((write, done))
            await done
            return
        self._busy = True
        batch: list[tuple[StepWrite, asyncio.Future[None] | None]] = [(write, None)]
        try:
            if _running.n > 1:  # others may finish in this turn of the loop: let them join
                await asyncio.sleep(0)
            batch += self._pending
            self._pending = []
            mine = await self._commit(batch)
            batch = []
            while self._pending:  # those that arrived while this batch was written
                batch = list(self._pending)
                self._pending = []
                await self._commit(batch)
        except asyncio.CancelledError:
            # hand the unwritten entries (this batch's too: it may not have landed) to
            # a task, so that no other activity waits on a cancelled one
            rest = [(w, d or self._loop.create_future()) for w, d in batch if not _done(d)]
            rest += self._pending
            self._pending = []
            if rest:
                self._drainer = self._loop.create_task(self._write_rest(rest))
            else:
                self._busy = False
            raise
        self._busy = False
        if mine is not None:
            raise mine

    async def _write_rest(self, batch: list[tuple[StepWrite, asyncio.Future[None]]]) -> None:
        try:
            while batch:
                await self._commit(list(batch))
                batch = self._pending
                self._pending = []
        finally:
            self._busy = False
            self._drainer = None

    async def _commit(
        self, batch: Sequence[tuple[StepWrite, asyncio.Future[None] | None]]
    ) -> Exception | None:
        """Write `batch`, settling the waiters' futures; the error of an entry without a
        future (the caller's own), or None."""
        steps = [w for w, _ in batch]
        try:
            await self._store.commit(UnitOfWork(steps[0].record.run_id, None, steps=steps))
        except Exception as exc:
            if len(batch) == 1:
                return _settle(batch[0][1], exc)
            mine = None
            for one in batch:  # find the entry the store refuses; write the others
                mine = await self._commit([one]) or mine
            return mine
        for _, done in batch:
            _settle(done, None)
        return None


def _done(done: asyncio.Future[None] | None) -> bool:
    return done is not None and done.done()


def _settle(done: asyncio.Future[None] | None, exc: Exception | None) -> Exception | None:
    """Tell a waiter how its entry's write went; the error when there is no waiter."""
    if done is None:
        return exc
    if not done.done():
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)
    return None


class _Running:
    """How many activities of this process are running (`running()`)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __enter__(self) -> None:
        self.n += 1

    def __exit__(self, *exc: object) -> None:
        self.n -= 1


_running = _Running()


def running() -> _Running:
    """Count a running activity while in it: a write waits one turn of the event loop
    for other activities' entries only when others run (a lone activity, as in a
    sequential workflow, pays no wait: bench/README.md).

    Example:
        with running():
            await record(app.store, entry)
    """
    return _running


_WRITERS: weakref.WeakKeyDictionary[Any, _Writer] = weakref.WeakKeyDictionary()


def _writer(store: Store) -> _Writer:
    """The group-commit writer of `store` on the running event loop."""
    loop = asyncio.get_running_loop()
    found = _WRITERS.get(store)
    if found is None or found._loop is not loop:
        found = _WRITERS[store] = _Writer(store, loop)
    return found


def _status(entry: Entry) -> StepStatus:
    if entry.pending:
        return StepStatus.PENDING
    if entry.error is None or (entry.fallback is not None and entry.data is not None):
        return StepStatus.OK  # (a failure whose fallback supplied the value: it stands)
    return StepStatus.ERROR


async def end_with_state(
    store: Store,
    info: RunInfo,
    result_json: bytes | None,
    state_json: bytes | None = None,
    writes: Sequence[StepWrite] = (),
) -> bool:
    """Record the end Temporal reported for `info`, with the run's typed state (JSON,
    which only the worker has) and entries `writes` in the same transaction; True when
    this call recorded it (False: not ended, ended already — the other writer then loses
    Temporal's lease — or not a run Keel started on Temporal)."""
    if not info.status.terminal:
        return False
    from keel.errors import LeaseLost

    try:
        await store.finish_run(
            info.id, OWNER, info.status, result_json, info.error, state_json, writes, time.time()
        )
    except LeaseLost:
        return False
    return True


__all__ = [
    "OWNER",
    "Entry",
    "end_with_state",
    "on_temporal",
    "open_run",
    "record",
    "step_write",
]
