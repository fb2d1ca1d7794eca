"""Retries the workflow schedules itself: retry budgets, feedback for local tools.

Most tool retries are Temporal's (each attempt an activity attempt, Keel deciding when
in the activity). Two things need the workflow instead:

- `Retry(budget=N)` caps a tool's retries across the whole run, every call and map
  item together (an operation of one's own with a budgeted `StepPolicy` likewise,
  counted under its name; a model call whose Gateway's `Retry` has a budget under its
  step name, `llm:<name>`, each attempt a `keel.llm` activity). Only the workflow sees
  them all, so each failed attempt comes back to it with the delay Keel picked
  ("retry_in"); the workflow counts the retry against the budget (deterministically:
  its inputs are in history, so a replay counts the same), waits on a timer, and
  schedules the next attempt. The request says how much budget is left, so the
  activity's own decision (and what it writes to Keel's store) names
  `keel.BudgetExceeded` too.
- A `local=True` tool has no heartbeat details to carry validation feedback from one
  attempt to the next: the workflow puts the messages in the next attempt's request.

Example (what `TemporalExecution.call_tool` does for such a tool):
    return await scheduled_retries(port, scope, tool, request, annotation)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from keel.backends.temporal.activity import budget_spent, keel_error
from keel.engine.journal import Scope
from keel.engine.serde import revive, unannotated
from keel.types import StepKind, StructuredError

if TYPE_CHECKING:
    from keel.backends.temporal.port import TemporalExecution
    from keel.engine.registry import ToolDef
    from keel.policy.retry import Retry


def workflow_retries(tool: ToolDef) -> bool:
    """Whether the workflow schedules `tool`'s retries (else Temporal does)."""
    retry = tool.retry
    if retry is None or retry.attempts <= 1:
        return False
    return retry.budget is not None or bool(tool.options.get("local"))


async def scheduled_retries(
    port: TemporalExecution,
    scope: Scope,
    tool: ToolDef,
    request: dict[str, Any],
    annotation: Any,
    schedule: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
) -> Any:
    """Attempt `tool` until it succeeds or Keel gives up, one activity per attempt."""
    retry = tool.retry
    assert retry is not None
    done = await attempts(port, scope, tool.name, retry, request, StepKind.TOOL, schedule)
    if isinstance(done, StructuredError):
        return await port.give_up(scope, tool, request, done, annotation)
    return revive(done["output"], annotation if annotation is not None else unannotated())


async def attempts(
    port: TemporalExecution,
    scope: Scope,
    name: str,
    retry: Retry,
    request: dict[str, Any],
    kind: StepKind,
    schedule: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
) -> dict[str, Any] | StructuredError:
    """Attempt step `name` (a tool, or an operation of one's own) until it succeeds (the
    activity's result) or Keel gives up (its final error): the caller applies the
    fallback. A retry budget is counted per name, as Keel's engine counts it.

    Example (an operation of one's own with `Retry(budget=2)`):
        done = await attempts(port, scope, "flaky", retry, request, StepKind.TOOL, schedule)
    """

    key, pos, digest = request["key"], request["pos"], request["digest"]
    budget = retry.budget
    attempt = 1
    feedback: list[str] = []
    while True:
        ask = {**request, "attempt": attempt, "feedback": feedback}
        if budget is not None:
            used = port.retries_used.get(name, 0)
            ask.update(budget=budget, budget_left=budget - used)
        try:
            done = await schedule(ask)
        except (ActivityError, ApplicationError) as exc:
            found = keel_error(exc)
            if found is None:
                raise  # a timeout or cancellation Temporal decided: its own error
            err, was = found
            port.check(scope, pos, key, digest, was, kind)
            wait = was.get("retry_in")
            tried = int(was.get("attempt", attempt))
            if wait is None:
                return err
            if budget is not None:
                # concurrent calls were each told what was left when they started: the
                # workflow's own count has the last word
                used = port.retries_used.get(name, 0)
                if used >= budget:
                    return budget_spent(name, budget, err, tried)
                port.retries_used[name] = used + 1
            feedback = list(err.data.get("messages", [])) if err.type == "ValidationFailed" else []
            if float(wait) > 0:
                await workflow.sleep(float(wait), summary=f"{key} retry {tried + 1}")
            attempt = tried + 1
            continue
        port.check(scope, pos, key, digest, done, kind)
        return done


__all__ = ["attempts", "scheduled_retries", "workflow_retries"]
