"""`SQLStore`: the `keel.store.Store` interfaces over the neutral query modules.

Every method hands its query function to `_call`, which a backend implements: SQLite
runs it inline on its one connection, a Postgres store would run it in a worker thread
on a pooled connection (see `keel.store.sql.dialect` for the whole contract). What is
not SQL (`now`, `reclaim_space`, `rekey`, `close`) is the backend's own.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from keel.store.base import Store
from keel.store.drift import DriftMonitorSpec, DriftValue
from keel.store.evals import EvalCaseResult, EvalResult
from keel.store.records import (
    AuditEntry,
    Claimed,
    ConsoleSession,
    KeywordHit,
    MemoryExtract,
    MemoryNamespace,
    MemoryRow,
    Purged,
    PurgeScope,
    RunFilter,
    SpanRecord,
    StepWrite,
    UsageGroup,
    User,
    WorkerBeat,
)
from keel.store.session_state import ANY, Expect, SessionEntry
from keel.store.sql import (
    drift,
    evals,
    identity,
    memory,
    rekey,
    retention,
    reviews,
    runs,
    session_state,
    spans,
    usage,
)
from keel.store.sql.core import Session
from keel.store.unit import Committed, UnitOfWork
from keel.types import (
    Escalation,
    ReviewRequest,
    RunInfo,
    RunStatus,
    StepRecord,
    StructuredError,
)

P = ParamSpec("P")
R = TypeVar("R")


class SQLStore(Store):
    """A store whose SQL is `keel.store.sql`'s; a backend supplies `_call`.

    Example (a backend):
        >>> class MyStore(SQLStore):  # doctest: +SKIP
        ...     async def _call(self, fn, /, *args, **kwargs):
        ...         with self._pool.connection() as conn:
        ...             return await asyncio.to_thread(fn, MySession(conn), *args, **kwargs)
    """

    @abc.abstractmethod
    async def _call(
        self, fn: Callable[Concatenate[Session, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """`fn(session, *args, **kwargs)`, run the way this backend runs statements."""

    # -- journal ------------------------------------------------------------------

    async def create_run(
        self,
        run_id: str,
        workflow: str,
        input_json: bytes,
        now: float,
        tenant: str | None = None,
        session: str | None = None,
    ) -> tuple[RunInfo, bool]:
        return await self._call(runs.create_run, run_id, workflow, input_json, now, tenant, session)

    async def get_run(self, run_id: str) -> RunInfo | None:
        return await self._call(runs.get_run, run_id)

    async def list_runs(self, flt: RunFilter) -> list[RunInfo]:
        return await self._call(runs.list_runs, flt)

    async def cancel_run(self, run_id: str, now: float) -> RunInfo:
        return await self._call(runs.cancel_run, run_id, now)

    async def load_steps(self, run_id: str) -> list[StepRecord]:
        return await self._call(runs.load_steps, run_id)

    async def load_blob(self, digest: str) -> bytes:
        return await self._call(runs.load_blob, digest)

    async def save_blob(self, digest: str, data: bytes) -> None:
        await self._call(runs.save_blob, digest, data)

    async def commit(self, uow: UnitOfWork) -> Committed:
        return await self._call(runs.commit, uow)

    async def take_signal(
        self, run_id: str, owner: str, name: str, write: StepWrite, writes: Sequence[StepWrite]
    ) -> bytes | None:
        return await self._call(runs.take_signal, run_id, owner, name, write, writes)

    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload_json: bytes,
        now: float,
        *,
        only_if_waiting: bool = False,
    ) -> RunInfo:
        return await self._call(runs.send_signal, run_id, name, payload_json, now, only_if_waiting)

    async def claim(
        self,
        owner: str,
        lease_seconds: float,
        limit: int,
        workflows: Iterable[str],
        ids: Iterable[str] | None = None,
    ) -> list[Claimed]:
        return await self._call(runs.claim, owner, lease_seconds, limit, workflows, ids)

    async def next_due(
        self, workflows: Iterable[str], ids: Iterable[str] | None = None
    ) -> float | None:
        return await self._call(runs.next_due, workflows, ids)

    async def renew(self, owner: str, run_ids: Sequence[str], lease_seconds: float) -> set[str]:
        return await self._call(runs.renew, owner, run_ids, lease_seconds)

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
        return await self._call(
            runs.suspend_run, run_id, owner, wake_at, waiting_on, writes, now, state_json
        )

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
        return await self._call(
            runs.finish_run, run_id, owner, status, result_json, error, state_json, writes, now
        )

    async def release_run(
        self, run_id: str, owner: str, writes: Sequence[StepWrite], now: float
    ) -> None:
        return await self._call(runs.release_run, run_id, owner, writes, now)

    async def running_owners(self) -> list[str]:
        return await self._call(runs.running_owners)

    async def expire_owner(self, owner: str) -> int:
        return await self._call(runs.expire_owner, owner)

    async def worker_beat(self, beat: WorkerBeat, *, forget_before: float | None = None) -> None:
        return await self._call(identity.worker_beat, beat, forget_before)

    async def list_workers(self) -> list[WorkerBeat]:
        return await self._call(identity.list_workers)

    async def remove_worker(self, owner: str) -> None:
        return await self._call(identity.remove_worker, owner)

    # -- people -------------------------------------------------------------------

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
        return await self._call(
            reviews.list_reviews, kind, status, queue, workflow, limit, run_id, latest_decided
        )

    async def count_reviews(self, kinds: Sequence[str], status: str, queue: str) -> int:
        return await self._call(reviews.count_reviews, kinds, status, queue)

    async def get_review(self, review_id: str) -> ReviewRequest | None:
        return await self._call(reviews.get_review, review_id)

    async def decide_review(
        self,
        review_id: str,
        status: str,
        decision: dict[str, Any],
        by: str,
        now: float,
        signal: str | None,
    ) -> ReviewRequest:
        return await self._call(reviews.decide_review, review_id, status, decision, by, now, signal)

    async def requeue_review(
        self, review_id: str, queue: str, deadline: float | None, now: float
    ) -> bool:
        return await self._call(reviews.requeue_review, review_id, queue, deadline, now)

    async def replace_review(self, old_id: str, review: ReviewRequest, now: float) -> bool:
        return await self._call(reviews.replace_review, old_id, review, now)

    async def count_sample(self, workflow: str, day: str) -> int:
        return await self._call(reviews.count_sample, workflow, day)

    async def list_escalations(
        self,
        status: str | None = None,
        queue: str | None = None,
        limit: int = 100,
        *,
        run_id: str | None = None,
    ) -> list[Escalation]:
        return await self._call(reviews.list_escalations, status, queue, limit, run_id)

    async def get_escalation(self, escalation_id: str) -> Escalation | None:
        return await self._call(reviews.get_escalation, escalation_id)

    async def resolve_escalation(
        self, escalation_id: str, status: str, resolution: dict[str, Any], by: str, now: float
    ) -> Escalation:
        return await self._call(
            reviews.resolve_escalation, escalation_id, status, resolution, by, now
        )

    async def audit_log(self, target: str | None = None, limit: int = 200) -> list[AuditEntry]:
        return await self._call(reviews.audit_log, target, limit)

    # -- usage and cache ----------------------------------------------------------

    async def spent(
        self,
        run_id: str | None = None,
        workflow: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
    ) -> float:
        return await self._call(usage.spent, run_id, workflow, tenant, since)

    async def usage_report(
        self,
        group_by: str,
        workflow: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
    ) -> list[UsageGroup]:
        return await self._call(usage.usage_report, group_by, workflow, tenant, since)

    # -- session state (ctx.session) ------------------------------------------------

    async def session_get(self, session: str, key: str) -> SessionEntry | None:
        return await self._call(session_state.session_get, session, key)

    async def session_write(
        self,
        session: str,
        key: str,
        value: str | None,
        *,
        writer: str,
        ttl: float | None = None,
        expect: str | Expect | None = ANY,
    ) -> bool:
        return await self._call(
            session_state.session_write, session, key, value, writer, ttl, expect
        )

    async def session_applied(self, session: str, writer: str) -> bool:
        return await self._call(session_state.session_applied, session, writer)

    async def cache_get(self, key: str, now: float) -> str | None:
        return await self._call(usage.cache_get, key, now)

    async def cache_put(self, key: str, value: str, expires_at: float | None) -> None:
        return await self._call(usage.cache_put, key, value, expires_at)

    async def cache_purge(self, now: float) -> int:
        return await self._call(usage.cache_purge, now)

    # -- spans --------------------------------------------------------------------

    async def write_spans(self, rows: Sequence[SpanRecord]) -> None:
        return await self._call(spans.write_spans, rows)

    async def load_spans(self, trace_id: str) -> list[SpanRecord]:
        return await self._call(spans.load_spans, trace_id)

    async def span_ids(self, trace_id: str) -> set[str]:
        return await self._call(spans.span_ids, trace_id)

    async def purge_spans(self, ended_before_ns: int) -> int:
        return await self._call(spans.purge_spans, ended_before_ns)

    # -- eval results ---------------------------------------------------------------

    async def save_eval(self, result: EvalResult, cases: list[EvalCaseResult]) -> None:
        await self._call(evals.save_eval, result, cases)

    async def list_evals(self, suite: str | None = None, limit: int = 50) -> list[EvalResult]:
        return await self._call(evals.list_evals, suite, limit)

    async def get_eval(self, eval_id: str) -> EvalResult | None:
        return await self._call(evals.get_eval, eval_id)

    async def eval_cases(self, eval_id: str) -> list[EvalCaseResult]:
        return await self._call(evals.eval_cases, eval_id)

    # -- drift observations --------------------------------------------------------

    async def put_drift_monitors(self, specs: list[DriftMonitorSpec]) -> None:
        await self._call(drift.put_drift_monitors, specs)

    async def list_drift_monitors(self, workflow: str | None = None) -> list[DriftMonitorSpec]:
        return await self._call(drift.list_drift_monitors, workflow)

    async def add_drift_values(self, values: list[DriftValue]) -> int:
        return await self._call(drift.add_drift_values, values) if values else 0

    async def drift_values(
        self,
        workflow: str,
        monitor: str,
        limit: int,
        *,
        before: tuple[float, int] | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> list[DriftValue]:
        return await self._call(drift.drift_values, workflow, monitor, limit, before, start, end)

    # -- identity -----------------------------------------------------------------

    async def add_user(self, user: User) -> None:
        return await self._call(identity.add_user, user)

    async def get_user(self, name: str) -> User | None:
        return await self._call(identity.get_user, name)

    async def user_by_token_id(self, token_id: str) -> User | None:
        return await self._call(identity.user_by_token_id, token_id)

    async def list_users(self) -> list[User]:
        return await self._call(identity.list_users)

    async def remove_user(self, name: str, by: str = "cli") -> None:
        return await self._call(identity.remove_user, name, by)

    async def rotate_token(
        self, name: str, token_id: str, token_hash: str, by: str = "cli"
    ) -> None:
        return await self._call(identity.rotate_token, name, token_id, token_hash, by)

    async def create_session(self, session: ConsoleSession) -> None:
        return await self._call(identity.create_session, session)

    async def get_session(self, id_hash: str, now: float) -> ConsoleSession | None:
        return await self._call(identity.get_session, id_hash, now)

    async def delete_session(self, id_hash: str) -> None:
        return await self._call(identity.delete_session, id_hash)

    async def purge_sessions(self, now: float) -> int:
        return await self._call(identity.purge_sessions, now)

    # -- maintenance ----------------------------------------------------------------

    async def purge_runs(self, scope: PurgeScope, limit: int = 100) -> Purged:
        return await self._call(retention.purge_runs, scope, limit)

    async def purge_expired(self, scope: PurgeScope, now: float) -> Purged:
        return await self._call(retention.purge_expired, scope, now)

    async def count_purge(self, scope: PurgeScope, now: float) -> Purged:
        return await self._call(retention.count_purge, scope, now)

    async def payload_keys(self) -> dict[str | None, int]:
        return await self._call(rekey.payload_keys)

    # -- long-term memory -------------------------------------------------------------

    async def memory_insert(self, rows: Sequence[MemoryRow]) -> list[str]:
        return await self._call(memory.memory_insert, rows)

    async def memory_rows(
        self, *, ids: Sequence[str] = (), seqs: Sequence[int] = (), vectors: bool = True
    ) -> list[MemoryRow]:
        return await self._call(memory.memory_rows, ids, seqs, vectors)

    async def memory_keyword(
        self, namespace: str, terms: Sequence[str], as_of: float | None, limit: int
    ) -> list[KeywordHit]:
        return await self._call(memory.memory_keyword, namespace, terms, as_of, limit)

    async def memory_vectors(
        self, namespace: str, after_seq: int, limit: int
    ) -> list[tuple[int, str, bytes | None]]:
        return await self._call(memory.memory_vectors, namespace, after_seq, limit)

    async def memory_list(
        self, namespace: str, *, after_seq: int = 0, limit: int = 100, current: bool = True
    ) -> list[MemoryRow]:
        return await self._call(memory.memory_list, namespace, after_seq, limit, current)

    async def memory_namespaces(self, *, limit: int = 1000) -> list[MemoryNamespace]:
        return await self._call(memory.memory_namespaces, limit)

    async def memory_forget(self, memory_id: str, *, by: str | None = None) -> bool:
        return await self._call(memory.memory_forget, memory_id, by)

    async def memory_supersede(self, old_id: str, new: MemoryRow) -> MemoryRow:
        return await self._call(memory.memory_supersede, old_id, new)

    async def memory_extract_put(self, items: Sequence[MemoryExtract]) -> None:
        return await self._call(memory.memory_extract_put, items)

    async def memory_extracts(self, run_id: str) -> list[MemoryExtract]:
        return await self._call(memory.memory_extracts, run_id)
