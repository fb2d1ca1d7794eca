"""`ctx.phase`: a block of steps with a checkpoint validator at its end.

A failed checkpoint fails only its phase: with `retries` the phase runs again in a
fresh journal branch (state restored to the phase start); then the run escalates
to a person or fails with `CheckpointFailed`. Earlier phases are untouched.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

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
    StoreError,
    from_structured,
    structured,
    validation_problems,
)
from keel.policy.validation import normalise, run_checks, verdict_messages
from keel.types import EscalationPacket, StepKind, StepRecord, StepStatus

if TYPE_CHECKING:
    from keel.engine.context import Context
    from keel.engine.state import StateTracker

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
        self,
        ex: RunExecution,
        parent: Scope,
        ctx: Context,
        name: str,
        check: Any,
        retries: int,
        on_fail: str,
        queue: str,
    ) -> None:
        if retries < 0:
            raise ConfigError(f"ctx.phase retries must be >= 0, got {retries}")
        if on_fail not in ("fail", "escalate"):
            raise ConfigError(f"ctx.phase on_fail must be 'fail' or 'escalate', got {on_fail!r}")
        self.ctx = ctx
        self.name = name
        self.checks = normalise(check)
        self.retries = retries
        self.on_fail: OnFail = "escalate" if on_fail == "escalate" else "fail"
        self.queue = queue
        self.ex = ex
        self.parent = parent
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
                # replay: this attempt failed its checkpoint; its steps stay unreplayed
                self.ex.journal.cover(rec.key)
                skipped = True
                continue
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
            or isinstance(exc, Suspend | Abandon | NonDeterminismError | LeaseLost | StoreError)
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
    return await checkpoint_messages(p.checks, state)


async def checkpoint_messages(checks: tuple[Any, ...], state: Any) -> list[str]:
    """What a phase's checks say about `state`; no messages means it passes."""
    messages: list[str] = []
    for check in checks:
        if inspect.iscoroutinefunction(check):
            try:
                verdict = await check(state)
            except Exception as exc:
                verdict = f"{check.__name__} raised {type(exc).__name__}: {exc}"
            messages += verdict_messages(check, verdict)
        else:
            messages += run_checks(state, (check,))[1]
    return messages


def check_refs(checks: tuple[Any, ...]) -> list[str]:
    """Where each check is defined (`module:qualname`), recorded with a phase escalation
    so that a resolution can be checked where it is entered, if that code is loaded."""
    return [
        f"{getattr(c, '__module__', None) or '?'}:"
        f"{getattr(c, '__qualname__', None) or type(c).__qualname__}"
        for c in checks
    ]


def find_checks(refs: list[str]) -> tuple[tuple[Any, ...], list[str]]:
    """The checks named by `refs` that are functions or classes defined at module level
    in a module already imported; and the refs that are not (lambdas, closures, code
    not loaded). Nothing is imported: a stored name never loads code."""
    found: list[Any] = []
    missing: list[str] = []
    for ref in refs:
        module, _, qualname = ref.partition(":")
        obj: Any = sys.modules.get(module)
        if "<" in qualname:  # a lambda, or a function defined inside another one
            obj = None
        for part in qualname.split(".") if obj is not None else ():
            obj = getattr(obj, part, None)
        if (
            (inspect.isfunction(obj) or isinstance(obj, type))
            and obj.__module__ == module
            and obj.__qualname__ == qualname
        ):
            found.append(obj)
        else:
            missing.append(ref)
    return tuple(found), missing


def edited_state(
    model: type[BaseModel], before: dict[str, Any], edits: Any
) -> tuple[BaseModel | None, list[str]]:
    """The state a phase resolution leaves: `before` with the fields in `edits` set;
    or, when the edits do not fit the state model, what is wrong with them (an unknown
    field anywhere is wrong: a misspelt name would otherwise be dropped silently)."""
    if edits is None:
        edits = {}
    if not isinstance(edits, dict):
        return None, ["a phase escalation's result is a JSON object of state fields to set"]
    known = model.model_fields
    unknown = [k for k in edits if k not in known]
    if unknown:
        names = ", ".join(known)
        return None, [f"{k}: unknown field (known: {names})" for k in unknown]
    try:
        value = model.model_validate({**before, **edits})
    except ValidationError as exc:
        return None, validation_problems(exc, "(state)")
    kept = value.model_dump(mode="json")
    dropped = [m for k, v in edits.items() for m in _dropped(v, kept.get(k), k)]
    return (None, dropped) if dropped else (value, [])


def _dropped(given: Any, kept: Any, path: str) -> list[str]:
    """Keys in `given` that validation ignored (absent from what was kept)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        out: list[str] = []
        for k, v in given.items():
            if k in kept:
                out += _dropped(v, kept[k], f"{path}.{k}")
            else:
                out.append(f"{path}.{k}: unknown field")
        return out
    if isinstance(given, list) and isinstance(kept, list) and len(given) == len(kept):
        pairs = enumerate(zip(given, kept, strict=True))
        return [m for i, (g, k) in pairs for m in _dropped(g, k, f"{path}[{i}]")]
    return []


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


def round_suffix(n: int) -> str:
    """Escalation rounds after the first get their own id and journal keys: `~2`, `~3`.

    Example:
        esc_id = f"{run_id}:{key}{round_suffix(2)}"  # "r1:phase:extract#0~2"
    """
    return "" if n == 1 else f"~{n}"


def phase_reason(name: str, attempts: int, messages: list[str]) -> str:
    """Why phase `name` is escalated after its last failed attempt.

    Example:
        phase_reason("extract", 2, ["figures sum to 3, not 4"])
    """
    return f"phase {name!r} failed its checkpoint after {attempts} attempt(s): " + "; ".join(
        messages
    )


def refused_reason(name: str, esc_id: str, by: str, bad_fit: list[str], failed: list[str]) -> str:
    """Why the next round opens: the resolution of `esc_id` did not fit, or failed the check.

    Example:
        refused_reason("extract", "r1:phase:extract#0", "ana", [], ["sum 5"])
    """
    if bad_fit:
        return (
            f"phase {name!r}: the resolution of escalation {esc_id} by {by} does not fit the "
            "state: " + "; ".join(bad_fit)
        )
    return (
        f"phase {name!r}: the resolution of escalation {esc_id} by {by} failed the "
        "checkpoint: " + "; ".join(failed)
    )


def phase_rejected(
    name: str, key: str, esc_id: str, decision: dict[str, Any]
) -> EscalationRejected:
    """The error of a phase whose escalation `esc_id` a person rejected with `decision`.

    Example:
        raise phase_rejected("extract", key, esc_id, {"by": "ana", "reason": "corrupt"})
    """
    by = decision.get("by", "someone")
    note = decision.get("reason") or decision.get("note") or "no reason given"
    return EscalationRejected(
        f"phase {name!r} escalation {esc_id} was rejected by {by}: {note}",
        escalation=esc_id,
        by=by,
        step=key,
    )


def phase_packet(
    run: Any,
    key: str,
    name: str,
    state: StateTracker | None,
    checks: tuple[Any, ...],
    reason: str,
    messages: list[str],
    err: Any,
) -> EscalationPacket:
    """The packet of a phase escalation, but for its journal (each executor reads its own).

    Example:
        packet = phase_packet(run, key, "extract", state, checks, reason, messages, None)
    """
    return EscalationPacket(
        workflow=run.workflow,
        run_id=run.id,
        step=key,
        phase=name,
        reason=reason,
        error=err,
        messages=messages,
        state=state.snapshot() if state is not None else None,
        result_schema=state.model.model_json_schema() if state is not None else None,
        checks=check_refs(checks),
    )


def _opened(p: Phase, n: int) -> bool:
    return p.ex.journal.by_key.get(f"{p.key}/escalation{round_suffix(n)}") is not None


async def _escalate(p: Phase, number: int, messages: list[str], exc: BaseException | None) -> bool:
    """Ask a person: accept the phase (optionally editing state) or reject it.

    A resolution is checked again here, whatever checked it where it was entered: its
    edits must fit the state model and the edited state must pass the checkpoint. If it
    does not, the phase does not pass: a new escalation (id suffixed `~2`, `~3`, ...)
    says why, and the run waits for that one.
    """
    ex = p.ex
    reason = phase_reason(p.name, number + 1, messages)
    err = structured(exc, step=p.key) if exc is not None else None
    n = 1
    while True:
        suffix = round_suffix(n)
        esc_id = f"{ex.run.id}:{p.key}{suffix}"
        ex.journal.reached(f"{p.key}/escalation{suffix}")  # replay got to this round
        if not _opened(p, n):
            await _open(p, number, n, esc_id, reason, messages, err)
        decision = await await_resolution(
            ex, p.key, esc_id, pos=p.retries + 2 * n, name=f"resolution{suffix}"
        )
        by = decision.get("by", "someone")
        if decision.get("status") != "resolved":
            break
        edits = decision.get("result")
        if _opened(p, n + 1):
            n += 1  # replay: this resolution was refused, and the next round is on record
            continue
        bad_fit, failed = await _verify(p, edits)
        if not bad_fit and not failed:
            state = p.parent.state
            # what the last attempt changed after its last step: applying the edits marks
            # the whole state as recorded, so take it first and journal it with the phase
            pending = state.delta() if state is not None else None
            if isinstance(edits, dict) and edits and state is not None:
                state.apply(edits)  # the reviewer's corrections become the state
            p.passed = True
            await _finish(p, StepStatus.OK, None, number + 1, fallback="human", delta=pending)
            return True
        reason = refused_reason(p.name, esc_id, by, bad_fit, failed)
        messages, err = bad_fit or failed, None
        n += 1
    failure = structured(phase_rejected(p.name, p.key, esc_id, decision), step=p.key)
    failure.fallback = "human"
    await _finish(p, StepStatus.ERROR, failure, number + 1, fallback="human")
    raise from_structured(failure)


async def _open(
    p: Phase, number: int, n: int, esc_id: str, reason: str, messages: list[str], err: Any
) -> None:
    """Record escalation round `n` of the phase, and the journal entry that marks it."""
    ex = p.ex
    packet = phase_packet(ex.run, p.key, p.name, p.parent.state, p.checks, reason, messages, err)
    packet.journal = journal_summary(ex, f"{p.key}/{number}/")
    marker_scope = Scope(path=f"{p.key}/")
    marker = ex.record(
        marker_scope,
        f"{p.key}/escalation{round_suffix(n)}",
        p.retries + 2 * n - 1,
        StepKind.PHASE,
        "escalation",
        "",
        time.time(),
    )
    marker.output = esc_id
    data = b'"' + esc_id.encode() + b'"'
    await escalate(ex, p.key, "phase", packet, p.queue, (marker_scope, marker, data), esc_id)


async def _verify(p: Phase, edits: Any) -> tuple[list[str], list[str]]:
    """Why a resolution cannot pass the phase: (does not fit the state, fails the checkpoint)."""
    done = p.ex.journal.by_key.get(p.key)
    if done is not None and done.status is StepStatus.OK:
        return [], []  # replay: it passed when it was applied; checks are not re-run
    tracker = p.parent.state
    if tracker is None:
        if edits not in (None, {}):
            return ["this workflow has no state to edit: resolve with no result"], []
        return [], await _run_check(p, None)
    value, bad_fit = edited_state(tracker.model, tracker.snapshot(), edits)
    if value is None:
        return bad_fit, []
    return [], await _run_check(p, value)
