"""`ctx.operation(...)` on Temporal: a feature's effect run as a local activity.

A feature (model calls, memory, session state, a user's own `ctx.operation`) hands
`Operation.run` a closure: its effect in this process. A closure cannot travel to
another worker, but a local activity runs in the worker that runs the workflow, so the
effect is registered here under the run and step key, and the local activity `keel.op`
runs it and records its outcome (a marker in history: a replay returns it without
running the effect again). A worker that dies while the effect runs leaves no marker:
the workflow task moves to another worker, whose replay registers the effect again and
runs it there, as Keel's engine re-runs an effect whose outcome it never journaled.

Retries are Keel's `Retry`, decided per failed attempt as for tools (Temporal schedules
the next attempt at the delay Keel picks; with a per-run `budget=` the workflow does,
keel.backends.temporal.attempts); the fallback is applied in the workflow.
Each attempt's outcome is written to Keel's store by the activity, with the usage the
effect metered (`op.meter`), so costs and traces see it once.

Example (a user's journaled call to an outside oracle, the same code on both engines):
    op = ctx.operation("oracle", question)
    answer = await op.run(lambda: oracle.ask(question))
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from keel.backends.temporal.activity import (
    attempt_of,
    failure,
    first_attempt_at,
    keel_error,
    retried,
)
from keel.backends.temporal.decisions import current, review_check
from keel.backends.temporal.intent import Recorded, once
from keel.backends.temporal.mirror import Entry, record
from keel.backends.temporal.model_calls import MODEL_ACTIVITY, portable
from keel.backends.temporal.people import act, escalate_operation
from keel.engine.control import CURRENT_STEP, StepInfo
from keel.engine.journal import Scope
from keel.engine.recovery import PLAIN, StepPolicy, typed_output
from keel.engine.serde import from_json, revive, to_json, unannotated
from keel.errors import (
    ConfigError,
    KeelError,
    OutcomeUnknown,
    ValidationFailed,
    from_structured,
    structured,
)
from keel.policy.validation import run_checks
from keel.store import Usage
from keel.types import StepKind, StructuredError

if TYPE_CHECKING:
    from keel.app import App
    from keel.backends.temporal.port import TemporalExecution

OP_ACTIVITY = "keel.op"
# A local activity longer than this is still fine (the SDK extends the workflow task),
# but one that hangs must end: Temporal then retries it under Keel's policy.
_ATTEMPT_TIMEOUT = timedelta(minutes=10)
_KEPT_INPUT = (StepKind.TOOL, StepKind.MEMORY, StepKind.SESSION)


@dataclass(slots=True)
class _Effect:
    fn: Callable[[], Awaitable[Any]]
    op: TemporalOperation
    policy: StepPolicy
    annotation: Any
    usage: Usage | None = field(default=None)


# (run id, step key) -> the effect a workflow in this process is waiting on
_EFFECTS: dict[tuple[str, str], _Effect] = {}


class TemporalOperation:
    """One journaled operation of a run on Temporal (the `Operation` protocol).

    Example:
        op = ctx.operation("fetch_quote", symbol)
        quote = await op.run(lambda: broker.quote(symbol))
    """

    def __init__(
        self,
        port: TemporalExecution,
        scope: Scope,
        kind: StepKind,
        name: str,
        digest: str,
        key: str,
        pos: int,
    ) -> None:
        self._temporal = port
        self.scope = scope
        self.kind = kind
        self.name = name
        self.digest = digest
        self.key = key
        self.pos = pos
        self.recorded = None
        self.started_at = workflow.now().timestamp()
        self._review: str | None = None  # the request for a person this step opened

    # -- what the journal says: Temporal's history answers inside run() --------------

    @property
    def run_id(self) -> str:
        return self._temporal.run.id

    @property
    def workflow(self) -> str:
        return self._temporal.run.workflow

    done = False  # a replay returns the recorded outcome from run(), without the effect
    begun = False
    deadline = None

    def clock(self) -> float:
        return workflow.now().timestamp()

    def has(self, part: str) -> bool:
        return False

    async def replay(self, annotation: Any = None) -> Any:
        raise ConfigError(f"step {self.key!r}: replay() is answered by run() on Temporal")

    async def _give_up(self, pol: StepPolicy, err: StructuredError, ann: Any) -> Any:
        """The effect failed for good: its fallback decides; `Fallback.human` asks a
        person (keel.backends.temporal.people), as for a tool."""
        if pol.fallback is not None and pol.fallback.kind == "human":
            return await escalate_operation(self, pol, err, ann)
        return self._temporal.fall_back(pol.fallback, self.key, err, ann)

    def meter(
        self,
        *,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
        cache_hit: bool,
    ) -> None:
        """Usage of the effect running now, written to Keel's store with its outcome."""
        effect = _EFFECTS.get((self.run_id, self.key))
        if effect is not None and effect.op is self:
            effect.usage = Usage(model, input_tokens, output_tokens, cost_usd, cache_hit)

    # -- running an effect ----------------------------------------------------------

    async def run(
        self,
        fn: Callable[[], Awaitable[Any]],
        annotation: Any = None,
        policy: StepPolicy | None = None,
    ) -> Any:
        """Run `fn` (a local activity) under `policy`; on replay, the recorded outcome."""
        port = self._temporal
        if port.hard_stop is not None:
            raise port.hard_stop
        ann = unannotated() if annotation is None else annotation
        pol = policy or PLAIN
        model_call = pol.extra.get("model_call") if self.kind is StepKind.LLM else None
        remote = None if model_call is None else portable(model_call)
        slot = (self.run_id, self.key)
        effect = _Effect(fn, self, pol, ann)
        _EFFECTS[slot] = effect
        request = {
            "key": self.key,
            "digest": self.digest,
            "kind": self.kind.value,
            "name": self.name,
            "scope": self.scope.path,
            "pos": self.pos,
            "started": self.started_at,
        }

        async def schedule(ask: dict[str, Any]) -> dict[str, Any]:
            if remote is not None:  # a model call: an activity on any worker (model_calls)
                out: dict[str, Any] = await workflow.execute_activity(
                    MODEL_ACTIVITY,
                    {**ask, "llm": remote},
                    start_to_close_timeout=_ATTEMPT_TIMEOUT,
                    retry_policy=RetryPolicy(
                        maximum_attempts=pol.retry.attempts,
                        initial_interval=timedelta(seconds=1),
                    ),
                    summary=self.key,
                )
                return out
            out = await workflow.execute_local_activity(
                OP_ACTIVITY,
                ask,
                start_to_close_timeout=_ATTEMPT_TIMEOUT,
                # Keel's policy ends it (activity.failure); the spare attempts are for
                # an effect scheduled just before its workflow left the cache
                retry_policy=RetryPolicy(
                    maximum_attempts=pol.retry.attempts + 3,
                    initial_interval=timedelta(seconds=1),
                ),
                summary=self.key,
            )
            return out

        try:
            if _budgeted(pol):
                return await self._with_budget(pol, request, ann, schedule)
            done = await schedule(request)
        except (ActivityError, ApplicationError) as exc:
            found = keel_error(exc)
            if found is None:
                raise
            err, was = found
            port.check(self.scope, self.pos, self.key, self.digest, was, self.kind)
            return await self._give_up(pol, err, ann)
        finally:
            if _EFFECTS.get(slot) is effect:
                del _EFFECTS[slot]
        port.check(self.scope, self.pos, self.key, self.digest, done, self.kind)
        return revive(done["output"], ann)

    async def _with_budget(
        self,
        pol: StepPolicy,
        request: dict[str, Any],
        ann: Any,
        schedule: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    ) -> Any:
        """`Retry(budget=N)`: the workflow schedules each retry and counts it against the
        run's budget under this operation's name, as for tools (keel...attempts)."""
        from keel.backends.temporal.attempts import attempts

        port = self._temporal
        done = await attempts(port, self.scope, self.name, pol.retry, request, self.kind, schedule)
        if isinstance(done, StructuredError):
            return await self._give_up(pol, done, ann)
        return revive(done["output"], ann)

    # -- outcomes a feature decides itself, and waiting for a person's decision -------

    async def finish(self, value: Any) -> Any:
        if self._review is not None:  # a person's decision: the step's entry in the store
            entry = {**self._entry(), "output": value}
            settle = {"op": "settle", "id": self._review, "kind": "review", "decision": value}
            await act({**settle, "entry": entry}, f"{self.key}/decided")
        return value

    async def fail(self, exc: KeelError, *, fatal: bool = False) -> NoReturn:
        err = structured(exc, step=self.key)
        raised = from_structured(err)
        if self._review is not None:  # e.g. its deadline passed: the step's entry says so
            entry = {**self._entry(), "error": err.model_dump(mode="json")}
            await act({"op": "record", "entry": entry}, f"{self.key}/failed")
        if fatal:
            self._temporal.hard_stop = raised
        raise raised from None

    def _entry(self) -> dict[str, Any]:
        """This step's journal entry as `keel.people` writes it (JSON)."""
        return {
            "run_id": self.run_id,
            "key": self.key,
            "scope": self.scope.path,
            "pos": self.pos,
            "kind": self.kind.value,
            "name": self.name,
            "digest": self.digest,
            "started": self.started_at,
            "attempts": 1,
        }

    async def begin(self, *, wake_at: float | None = None, review: Any = None) -> bool:
        """Open `review` (a request for a person) in Keel's store, or nothing to write
        (what follows, a wait or a finish, is in Temporal's history). A review's deadline
        is the timeout `wait` is given (a workflow timer), so `wake_at` needs no record."""
        if review is None:
            return True
        from keel.backends.temporal.decisions import current

        self._review = review.id
        # open for decisions before the store shows it: nobody can decide it too early
        check = review_check(review.kind, review.request, self._temporal.tools)
        current().expect(review.id, review.kind, check)
        opened = {"op": "review", "review": review.model_dump(mode="json")}
        done = await act({**opened, "entry": {**self._entry(), "pending": True}}, self.key)
        return bool(done["opened"])

    def entry(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._temporal.refuse(f"step {self.key!r} writing its own journal entry")

    async def commit(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._temporal.refuse(f"step {self.key!r} writing its own journal entry")

    async def wait(self, signal: str, part: str, pos: int, timeout: float | None = None) -> Any:
        """The decision on the review `begin` opened (the update `keel.decide`), or
        `signal` under this operation (a Temporal signal, as `ctx.wait_for`)."""
        if self._review is None:
            return await self._temporal.wait_signal(Scope(f"{self.key}/", None), signal, timeout)
        return await current().wait(self._review, timeout, f"{self.key}/{part}")


def _budgeted(pol: StepPolicy) -> bool:
    """Whether the workflow schedules this operation's retries (a per-run budget)."""
    return pol.retry.budget is not None and pol.retry.attempts > 1


def make_op_activity(app: App) -> Callable[..., Any]:
    """The `keel.op` local activity: runs the effect a workflow in this worker registered."""

    @activity.defn(name=OP_ACTIVITY)
    async def keel_op(request: dict[str, Any]) -> dict[str, Any]:
        info = activity.info()
        run_id, key = info.workflow_id or "", request["key"]
        effect = _EFFECTS.get((run_id, key))
        if effect is None:
            # its workflow left this worker's cache while the effect was scheduled: the
            # next workflow task replays, registers it again and schedules it again
            raise ApplicationError(
                f"the effect of step {key!r} is no longer registered in this worker",
                type="EffectMoved",
                non_retryable=False,
                next_retry_delay=timedelta(milliseconds=100),
            )
        pol, name = effect.policy, request["name"]
        attempt = attempt_of(request, info)
        token = CURRENT_STEP.set(StepInfo(run_id, key, attempt, ()))
        try:
            if pol.irreversible:  # an intent first; an interrupted one is reconciled
                entry = _entry(run_id, request, effect, attempt, None, None)
                value = await once(app.store, entry, effect.fn, pol.reconcile, name)
            else:
                value = await effect.fn()
            if isinstance(value, Recorded):  # an earlier attempt did it: never again
                data = value.data
            else:
                if pol.validate:
                    value, messages = run_checks(value, pol.validate)
                    if messages:
                        raise ValidationFailed(
                            f"output of {name!r} failed validation: {'; '.join(messages)}",
                            messages=messages,
                        )
                data = to_json(value, what=f"step {key!r}")
                typed_output(name, value, data, effect.annotation)
        except Exception as exc:
            first = first_attempt_at(request, info)
            unknown = isinstance(exc, OutcomeUnknown)  # never re-run an unknown effect
            fail = failure(name, pol.retry, request, attempt, first, exc, final=unknown)
            again = retried(fail)
            if not again or pol.irreversible or "attempt" in request:
                # its last attempt: the failure is its outcome; a failed attempt that is
                # retried is written PENDING (an irreversible step's next attempt must
                # know it ended; a budgeted one shows its retries, as on Keel's engine)
                err = StructuredError.model_validate(fail.details[0])
                entry = _entry(run_id, request, effect, attempt, None, err)
                await record(app.store, replace(entry, pending=again))
            raise fail from exc
        finally:
            CURRENT_STEP.reset(token)
        await record(app.store, _entry(run_id, request, effect, attempt, data, None))
        return {
            "key": key,
            "digest": request["digest"],
            "output": from_json(data),
            "attempts": attempt,
        }

    return keel_op


def _entry(
    run_id: str,
    request: dict[str, Any],
    effect: _Effect,
    attempts: int,
    data: bytes | None,
    err: Any,
) -> Entry:
    kind = StepKind(request["kind"])
    return Entry(
        run_id=run_id,
        key=request["key"],
        scope=request["scope"],
        position=request["pos"],
        kind=kind,
        name=request["name"],
        digest=request["digest"],
        started=float(request.get("started") or time.time()),
        attempts=attempts,
        data=data,
        error=err,
        usage=effect.usage,
        input=effect.policy.input if kind in _KEPT_INPUT else None,
    )


__all__ = ["OP_ACTIVITY", "TemporalOperation", "make_op_activity"]
