"""The durable-operation primitive: the one way to make a journaled step.

Every feature that leaves a trace in a run's journal — tool calls, model turns,
approvals and reviews, escalations, signal waits — goes through an `Operation`:

1. opening it computes its key (the scope's path + name + a per-name sequence
   number) and checks the journal: a different step recorded at that position, or
   the same step with other inputs, raises `NonDeterminismError` naming both;
2. `done` says the journal holds its outcome: `replay()` returns the recorded value
   or re-raises the recorded error, and nothing runs again;
3. `begin()` records a PENDING entry, atomically with a request to a person (a
   review or an escalation) when there is one;
4. `run()` runs an effect under a `StepPolicy` (retries, fallbacks, validation,
   intent records for irreversible effects) and commits its outcome, with the
   usage the effect metered through `meter()`;
5. `finish()` / `fail()` commit an outcome decided by the feature itself.

A lost lease or a failing store turns into the engine's `Abandon` (the run stops
here without writing and resumes elsewhere from its journal), and `fail(...,
fatal=True)` is the run's hard stop: no feature handles either itself.

Example (a journaled call to an outside oracle, see docs/durable-operations.md):
    op = ctx.operation("oracle", question, kind=StepKind.TOOL)
    if op.done:
        return await op.replay()
    return await op.run(lambda: oracle.ask(question))
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

from keel.engine.control import Drain
from keel.engine.journal import Scope
from keel.engine.serde import to_json, unannotated
from keel.errors import KeelError, from_structured, structured
from keel.store import Usage
from keel.types import Escalation, ReviewRequest, StepKind, StepRecord, StepStatus

if TYPE_CHECKING:
    from keel.engine.execution import RunExecution
    from keel.engine.recovery import StepPolicy

# "No new input to show": a NonDeterminismError then names the steps and digests only.
NOT_SHOWN: Any = object()


class Operation:
    """One journaled operation of a run: key, journal check, replay, record, commit.

    Get one from `ctx.operation(name, *inputs)`; its methods are the whole protocol.

    Example:
        op = ctx.operation("fetch_quote", symbol)
        quote = await op.run(lambda: broker.quote(symbol))   # replayed after a restart
    """

    __slots__ = ("_delta", "_ex", "digest", "key", "kind", "name", "pos", "recorded", "scope")

    def __init__(
        self,
        ex: RunExecution,
        scope: Scope,
        kind: StepKind,
        name: str,
        digest: str,
        key: str,
        pos: int,
        recorded: StepRecord | None,
    ) -> None:
        self._ex = ex
        self.scope = scope
        self.kind = kind
        self.name = name
        self.digest = digest
        self.key = key  # e.g. "approval:refund#0"; the journal's (and idempotency) key
        self.pos = pos
        self.recorded = recorded  # the journal's entry for this key, if any
        self._delta: dict[str, Any] | None = None  # state changes taken by begin()

    # -- what the journal says ------------------------------------------------------

    @property
    def run_id(self) -> str:
        """The run this operation belongs to."""
        return self._ex.run.id

    @property
    def workflow(self) -> str:
        """The run's workflow name."""
        return self._ex.run.workflow

    @property
    def done(self) -> bool:
        """The journal holds this operation's outcome: `replay()` returns it."""
        rec = self.recorded
        return rec is not None and rec.status is not StepStatus.PENDING

    @property
    def begun(self) -> bool:
        """An earlier execution recorded this operation's PENDING entry (it is resuming)."""
        rec = self.recorded
        return rec is not None and rec.status is StepStatus.PENDING

    @property
    def started_at(self) -> float:
        """When the operation first started (its PENDING entry's time when resuming)."""
        rec = self.recorded
        return rec.started_at if rec is not None else time.time()

    @property
    def deadline(self) -> float | None:
        """The deadline its PENDING entry recorded (`begin(wake_at=...)`), if any."""
        rec = self.recorded
        return rec.wake_at if rec is not None else None

    def clock(self) -> float:
        """Now on the store's clock (epoch seconds): what deadlines are computed on, so
        every worker agrees when one has passed."""
        return self._ex.rt.clock()

    def has(self, part: str) -> bool:
        """The journal holds `<key>/<part>` (e.g. a decision this operation waited for)."""
        return f"{self.key}/{part}" in self._ex.journal.by_key

    async def replay(self, annotation: Any = None) -> Any:
        """The recorded outcome: its value (revived as `annotation`), or its error raised."""
        assert self.recorded is not None, "replay() needs a recorded outcome (see `done`)"
        return await self._ex.replayed(
            self.scope, self.recorded, unannotated() if annotation is None else annotation
        )

    # -- running an effect ----------------------------------------------------------

    async def run(
        self,
        fn: Callable[[], Awaitable[Any]],
        annotation: Any = None,
        policy: StepPolicy | None = None,
    ) -> Any:
        """Run `fn` under `policy` and journal its outcome; on replay, the recorded one.

        The value is checked against `annotation` (a type) before it is journaled.
        """
        ann = unannotated() if annotation is None else annotation
        if self.done:
            return await self.replay(ann)
        ex = self._ex
        if ex.draining:  # the step boundary: steps in flight finish, no new one starts
            raise Drain()
        from keel.engine.recovery import PLAIN, run_live

        return await run_live(self, fn, ann, policy or PLAIN)

    def meter(
        self,
        *,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
        cache_hit: bool,
    ) -> None:
        """Usage of the effect running now (a model call), stored with its outcome."""
        self._ex.meters[self.key] = Usage(model, input_tokens, output_tokens, cost_usd, cache_hit)

    # -- records and commits ----------------------------------------------------------

    def entry(
        self,
        status: StepStatus = StepStatus.OK,
        *,
        error: Any = None,
        attempts: int = 1,
        wake_at: float | None = None,
        started: float | None = None,
    ) -> StepRecord:
        """A journal entry for this operation (not yet written)."""
        return self._ex.record(
            self.scope,
            self.key,
            self.pos,
            self.kind,
            self.name,
            self.digest,
            self.started_at if started is None else started,
            status=status,
            error=error,
            attempts=attempts,
            wake_at=wake_at,
        )

    async def commit(
        self,
        rec: StepRecord,
        data: bytes | None = None,
        *,
        review: ReviewRequest | None = None,
        escalation: Escalation | None = None,
    ) -> bool:
        """Write `rec` (output `data`, JSON) with the request it opens, atomically.

        Returns True when the review or escalation was newly created by this write.
        """
        return await self._ex.commit(self.scope, rec, data, review=review, escalation=escalation)

    async def begin(
        self, *, wake_at: float | None = None, review: ReviewRequest | None = None
    ) -> bool:
        """Record the PENDING entry (with a review to open, atomically); True if new.

        The state changes made before it go with it, so a run that suspends here has
        them on record; `finish()` carries them over to the outcome.
        """
        rec = self.entry(StepStatus.PENDING, wake_at=wake_at)
        state = self.scope.state
        if state is not None:
            rec.state_delta = self._delta = state.delta()
        created = await self.commit(rec, review=review)
        self.recorded = rec
        return created

    async def wait(self, signal: str, part: str, pos: int, timeout: float | None = None) -> Any:
        """Wait durably for `signal` under this operation (journaled as `<key>/<part>`).

        Returns the payload; raises `keel.SignalTimeout` once `timeout` passes, or
        suspends the run (it holds nothing while it waits).
        """
        from keel.engine.waiting import wait_signal

        sub = Scope(path=f"{self.key}/", state=None)
        return await wait_signal(self._ex, sub, f"{self.key}/{part}", pos, signal, timeout)

    async def finish(self, value: Any) -> Any:
        """Commit `value` as the operation's result; returns it."""
        done = self.entry()
        done.state_delta = self._delta  # a PENDING entry this execution wrote had them
        await self.commit(done, to_json(value, what=f"step {self.key!r}"))
        return value

    async def fail(self, exc: KeelError, *, fatal: bool = False) -> NoReturn:
        """Commit `exc` as the operation's outcome and raise it (as replay will).

        `fatal=True` is a hard stop: the run fails even if the workflow catches it.
        """
        err = structured(exc, step=self.key)
        failed = self.entry(StepStatus.ERROR, error=err)
        failed.state_delta = self._delta
        await self.commit(failed)
        raised = from_structured(err)
        if fatal:
            self._ex.fatal = raised
        raise raised from None


__all__ = ["NOT_SHOWN", "Operation"]
