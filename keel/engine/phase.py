"""`ctx.phase`: a block of steps with a checkpoint validator at its end.

A failed checkpoint fails only its phase: with `retries` the phase runs again in a
fresh journal branch (state restored to the phase start); then the run escalates
to a person or fails with `CheckpointFailed`. Earlier phases are untouched.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from keel.engine.execution import CURRENT_SCOPE, Abandon, RunExecution, Suspend
from keel.engine.journal import Scope
from keel.engine.recovery import await_resolution, escalate, journal_summary
from keel.engine.serde import digest
from keel.errors import (
    CheckpointFailed,
    ConfigError,
    EscalationRejected,
    LeaseLost,
    NonDeterminismError,
    from_structured,
    structured,
)
from keel.policy.validation import normalise, run_checks, verdict_messages
from keel.store.base import StepWrite
from keel.types import EscalationPacket, StepKind, StepRecord, StepStatus

if TYPE_CHECKING:
    from keel.engine.context import Context

OnFail = Literal["fail", "escalate"]


class Phase:
    """What `ctx.phase(...)` returns.

    Example:
        async with ctx.phase("respond", check=draft_is_coherent):
            ctx.state.draft = await ctx.call(draft, ticket)

        async for attempt in ctx.phase("extract", check=totals_add_up, retries=2):
            async with attempt:
                ctx.state.figures = await ctx.call(extract, doc)
    """

    def __init__(
        self, ctx: Context, name: str, check: Any, retries: int, on_fail: OnFail, queue: str
    ) -> None:
        if retries < 0:
            raise ConfigError(f"ctx.phase retries must be >= 0, got {retries}")
        if on_fail not in ("fail", "escalate"):
            raise ConfigError(f"ctx.phase on_fail must be 'fail' or 'escalate', got {on_fail!r}")
        self.ctx = ctx
        self.name = name
        self.checks = normalise(check)
        self.retries = retries
        self.on_fail = on_fail
        self.queue = queue
        self.ex: RunExecution = ctx._exec
        self.parent: Scope = ctx._scope
        self.key = ""
        self.pos = 0
        self.started = 0.0
        self.passed = False
        self._single: PhaseAttempt | None = None

    def _open(self) -> None:
        if self.key:
            return
        self.key, self.pos = self.parent.next(f"phase:{self.name}")
        self.started = time.time()
        rec = self.ex.check(self.parent, self.key, self.pos, digest(self.name, self.retries))
        del rec  # the final record is (re)written at the end; checking guards divergence

    def _attempt_outcome(self, n: int) -> StepRecord | None:
        return self.ex.journal.by_key.get(f"{self.key}/{n}")

    # -- single attempt: async with ----------------------------------------------

    async def __aenter__(self) -> Phase:
        if self.retries:
            raise ConfigError(
                f"phase {self.name!r} has retries={self.retries}, so it must re-run its body: "
                "write `async for attempt in ctx.phase(...):` then `async with attempt:`"
            )
        self._open()
        self._single = PhaseAttempt(self, 0, last=True)
        await self._single.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        assert self._single is not None
        return await self._single.__aexit__(et, exc, tb)

    # -- several attempts: async for ---------------------------------------------

    def __aiter__(self) -> AsyncIterator[PhaseAttempt]:
        return self._attempts()

    async def _attempts(self) -> AsyncIterator[PhaseAttempt]:
        self._open()
        skipped = False
        for n in range(self.retries + 1):
            last = n == self.retries
            rec = self._attempt_outcome(n)
            if rec is not None and rec.status is StepStatus.ERROR and not last:
                skipped = True
                continue  # replay: this attempt failed its checkpoint; its steps stay unreplayed
            if skipped and self.parent.state is not None:
                # the first execution restored the phase's start here, and recorded the
                # changes made before it with the skipped attempt's first step
                self.parent.state.sync()
                skipped = False
            yield PhaseAttempt(self, n, last=last)
            if self.passed:
                return


class PhaseAttempt:
    """One run of a phase's body, in its own journal branch."""

    def __init__(self, phase: Phase, number: int, last: bool) -> None:
        self.phase = phase
        self.number = number
        self.last = last
        self._token: Any = None
        self._snapshot: dict[str, Any] | None = None
        self._before: dict[str, Any] | None = None

    async def __aenter__(self) -> PhaseAttempt:
        p = self.phase
        state = p.parent.state
        self._snapshot = state.snapshot() if state is not None else None
        # changes made before the attempt began (usually before the phase): they stay to
        # be recorded with its first step, and are copied onto its outcome record so the
        # phase's start (where each attempt restarts) can be read from the journal
        self._before = state.pending() if state is not None else None
        scope = Scope(
            path=f"{p.key}/{self.number}/",
            state=state,
            phase=p.name,
            phase_prefix=f"{p.key}/{self.number}/",
        )
        self._token = CURRENT_SCOPE.set((p.ex, scope))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        p = self.phase
        CURRENT_SCOPE.reset(self._token)
        if exc is not None and (
            not isinstance(exc, Exception)
            or isinstance(exc, Suspend | Abandon | NonDeterminismError | LeaseLost)
        ):
            return False
        ex = p.ex
        outcome_key = f"{p.key}/{self.number}"
        outcome_scope = Scope(path=f"{p.key}/", state=None)
        recorded = ex.check(outcome_scope, outcome_key, self.number, digest(self.number))
        if recorded is not None:
            messages = list(recorded.error.data.get("messages", [])) if recorded.error else []
            passed = recorded.status is StepStatus.OK
        else:
            if exc is not None:
                messages = [f"{type(exc).__name__}: {exc}"]
            else:
                messages = await _run_check(p, p.ctx.state if p.parent.state else None)
            passed = not messages
            err = None
            if not passed:
                err = structured(
                    exc
                    if exc is not None
                    else CheckpointFailed(
                        f"phase {p.name!r} failed its checkpoint: {'; '.join(messages)}",
                        messages=messages,
                        phase=p.name,
                    ),
                    step=outcome_key,
                )
                err.data.setdefault("messages", messages)
            rec = ex.record(
                outcome_scope,
                outcome_key,
                self.number,
                StepKind.PHASE,
                p.name,
                digest(self.number),
                time.time(),
                status=StepStatus.OK if passed else StepStatus.ERROR,
                error=err,
            )
            rec.state_delta = self._before
            await ex.commit(outcome_scope, rec, None)
        if passed:
            p.passed = True
            await _finish(p, StepStatus.OK, None, self.number + 1)
            return False
        state = p.parent.state
        if not self.last:
            if state is not None and self._snapshot is not None:
                state.apply(self._snapshot)  # the next attempt starts where this one did
            return True
        if p.on_fail == "escalate":
            return await _escalate(p, self.number, messages, exc)
        failure = CheckpointFailed(
            f"phase {p.name!r} failed after {self.number + 1} attempt(s): {'; '.join(messages)}",
            messages=messages,
            phase=p.name,
            step=p.key,
        )
        await _finish(p, StepStatus.ERROR, structured(failure, step=p.key), self.number + 1)
        if exc is not None:
            return False  # the step's own error is the clearer one; it is on record
        raise failure


async def _run_check(p: Phase, state: Any) -> list[str]:
    messages: list[str] = []
    for check in p.checks:
        if inspect.iscoroutinefunction(check):
            try:
                verdict = await check(state)
            except Exception as exc:
                verdict = f"{check.__name__} raised {type(exc).__name__}: {exc}"
            messages += verdict_messages(check, verdict)
        else:
            messages += run_checks(state, (check,))[1]
    return messages


async def _finish(
    p: Phase,
    status: StepStatus,
    err: Any,
    attempts: int,
    fallback: str | None = None,
    delta: dict[str, Any] | None = None,
) -> None:
    ex = p.ex
    if ex.journal.by_key.get(p.key) is not None:
        if p.parent.state is not None:
            p.parent.state.sync()  # replay: where the first execution committed the phase
        return
    rec = ex.record(
        p.parent,
        p.key,
        p.pos,
        StepKind.PHASE,
        p.name,
        digest(p.name, p.retries),
        p.started,
        status=status,
        error=err,
        attempts=attempts,
    )
    rec.fallback = fallback
    rec.state_delta = delta  # commit adds what changed since
    await ex.commit(p.parent, rec, None)


async def _escalate(p: Phase, number: int, messages: list[str], exc: BaseException | None) -> bool:
    """Ask a person: accept the phase as it stands (optionally editing state) or reject."""
    ex = p.ex
    esc_id = f"{ex.run.id}:{p.key}"
    if ex.journal.by_key.get(f"{p.key}/escalation") is None:
        prefix = f"{p.key}/{number}/"
        err = structured(exc, step=p.key) if exc is not None else None
        packet = EscalationPacket(
            workflow=ex.run.workflow,
            run_id=ex.run.id,
            step=p.key,
            phase=p.name,
            journal=journal_summary(ex, prefix),
            reason=f"phase {p.name!r} failed its checkpoint after {number + 1} attempt(s): "
            + "; ".join(messages),
            error=err,
            messages=messages,
            state=p.parent.state.snapshot() if p.parent.state is not None else None,
            result_schema=(
                p.parent.state.model.model_json_schema() if p.parent.state is not None else None
            ),
        )
        marker = ex.record(
            Scope(path=f"{p.key}/"),
            f"{p.key}/escalation",
            p.retries + 1,
            StepKind.PHASE,
            "escalation",
            "",
            time.time(),
        )
        marker.output = esc_id
        await escalate(
            ex,
            p.parent,
            p.key,
            "phase",
            packet,
            p.queue,
            [StepWrite(marker, b'"' + esc_id.encode() + b'"')],
        )
    decision = await await_resolution(ex, p.key, esc_id, pos=p.retries + 2)
    by = decision.get("by", "someone")
    if decision.get("status") == "resolved":
        edits = decision.get("result")
        state = p.parent.state
        # what the last attempt changed after its last step: applying the edits marks the
        # whole state as recorded, so take it first and journal it with the phase
        pending = state.delta() if state is not None else None
        if isinstance(edits, dict) and state is not None:
            state.apply(edits)  # the reviewer's corrections become the state
        p.passed = True
        await _finish(p, StepStatus.OK, None, number + 1, fallback="human", delta=pending)
        return True
    note = decision.get("reason") or decision.get("note") or "no reason given"
    rejected = EscalationRejected(
        f"phase {p.name!r} escalation {esc_id} was rejected by {by}: {note}",
        escalation=esc_id,
        by=by,
        step=p.key,
    )
    err = structured(rejected, step=p.key)
    err.fallback = "human"
    await _finish(p, StepStatus.ERROR, err, number + 1, fallback="human")
    raise from_structured(err)
