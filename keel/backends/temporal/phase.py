"""`ctx.phase` on Temporal: a block of steps checked as a whole at its end.

The same keys and outcome as on Keel's engine (keel.engine.phase): attempt `n` of
phase `draft` writes its steps under `phase:draft#0/n/`; its checkpoint runs when the
block ends, as the durable operation `phase:draft#0/n` (a `keel.op` local activity),
so a check that calls a model or a service runs once, and replay returns its verdict
from history. A failed checkpoint restores the state to the phase's start and runs the
block again while `retries` last, then fails with `keel.CheckpointFailed` (or the
block's own error), or with `on_fail="escalate"` asks a person
(keel.backends.temporal.phase_escalation). There is no journal branch to skip on
replay: Temporal replays every attempt, each step answered from history.

Example (the same workflow code on both executors):
    async for attempt in ctx.phase("extract", check=totals_add_up, retries=2):
        async with attempt:
            ctx.state.figures = await ctx.call(extract, doc)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from temporalio import workflow

from keel.backends.temporal.fanout import BRANCH
from keel.engine.journal import Scope
from keel.engine.phase import checkpoint_messages
from keel.engine.serde import digest
from keel.errors import CheckpointFailed, ConfigError
from keel.policy.validation import normalise
from keel.types import StepKind

if TYPE_CHECKING:
    from keel.backends.temporal.port import TemporalExecution
    from keel.engine.context import Context


class TemporalPhase:
    """What `ctx.phase(...)` returns on Temporal (the engine's `Phase` protocol).

    Example:
        async with ctx.phase("respond", check=draft_is_coherent):
            ctx.state.draft = await ctx.call(draft, ticket)
    """

    def __init__(
        self,
        port: TemporalExecution,
        parent: Scope,
        ctx: Context,
        name: str,
        check: Any,
        retries: int,
        on_fail: str,
        queue: str = "escalations",
    ) -> None:
        if retries < 0:
            raise ConfigError(f"ctx.phase retries must be >= 0, got {retries}")
        if on_fail not in ("fail", "escalate"):
            raise ConfigError(f"ctx.phase on_fail must be 'fail' or 'escalate', got {on_fail!r}")
        self.on_fail = on_fail
        self.queue = queue
        self.port = port
        self.parent = parent
        self.ctx = ctx
        self.name = name
        self.checks = normalise(check)
        self.retries = retries
        self.key = ""
        self.pos = 0
        self.started = 0.0
        self.passed = False
        self._single: TemporalPhaseAttempt | None = None

    def _open(self) -> None:
        if not self.key:
            self.key, self.pos = self.parent.next(f"phase:{self.name}")
            self.started = workflow.now().timestamp()

    async def __aenter__(self) -> TemporalPhase:
        if self.retries:
            raise ConfigError(
                f"phase {self.name!r} has retries={self.retries}, so it must re-run its body: "
                "write `async for attempt in ctx.phase(...):` then `async with attempt:`"
            )
        self._open()
        self._single = TemporalPhaseAttempt(self, 0, last=True)
        await self._single.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        assert self._single is not None
        return await self._single.__aexit__(et, exc, tb)

    def __aiter__(self) -> AsyncIterator[TemporalPhaseAttempt]:
        return self._attempts()

    async def _attempts(self) -> AsyncIterator[TemporalPhaseAttempt]:
        self._open()
        for n in range(self.retries + 1):
            yield TemporalPhaseAttempt(self, n, last=n == self.retries)
            if self.passed:
                return


class TemporalPhaseAttempt:
    """One run of a phase's body, in its own journal branch (`<phase key>/<n>/`)."""

    def __init__(self, phase: TemporalPhase, number: int, last: bool) -> None:
        self.phase = phase
        self.number = number
        self.last = last
        self._token: Any = None
        self._snapshot: dict[str, Any] | None = None

    async def __aenter__(self) -> TemporalPhaseAttempt:
        p = self.phase
        state = p.parent.state
        self._snapshot = state.snapshot() if state is not None else None
        path = f"{p.key}/{self.number}/"
        scope = Scope(path=path, state=state, phase=p.name, phase_prefix=path)
        self._token = BRANCH.set((p.port, scope))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        p = self.phase
        BRANCH.reset(self._token)
        if exc is not None and (not isinstance(exc, Exception) or p.port.hard_stop is not None):
            return False  # a cancellation, a divergence, a hard stop: not the phase's to judge
        if exc is not None:
            messages = [f"{type(exc).__name__}: {exc}"]
        else:
            messages = await self._verdict()
        if not messages:
            p.passed = True
            return False
        state = p.parent.state
        if not self.last:
            if state is not None and self._snapshot is not None:
                state.apply(self._snapshot)  # the next attempt starts where this one did
            p.port.superseded(f"{p.key}/{self.number}/")
            return True
        if p.on_fail == "escalate":
            from keel.backends.temporal.phase_escalation import escalate_phase

            return await escalate_phase(p, self.number, messages, exc)
        failure = CheckpointFailed(
            f"phase {p.name!r} failed after {self.number + 1} attempt(s): {'; '.join(messages)}",
            messages=messages,
            phase=p.name,
            step=p.key,
        )
        if exc is not None:
            return False  # the step's own error is the clearer one
        raise failure

    async def _verdict(self) -> list[str]:
        """The checkpoint's messages, from a durable operation (run once, then history)."""
        from keel.backends.temporal.operation import TemporalOperation

        p = self.phase
        tracker = p.parent.state
        if not p.checks:
            return []
        scope = Scope(path=f"{p.key}/")
        key = f"{p.key}/{self.number}"
        op = TemporalOperation(
            p.port, scope, StepKind.PHASE, p.name, digest(self.number), key, self.number
        )

        async def check() -> list[str]:
            return await checkpoint_messages(p.checks, tracker.value if tracker else None)

        messages: list[str] = await op.run(check, list[str])
        return messages


__all__ = ["TemporalPhase", "TemporalPhaseAttempt"]
