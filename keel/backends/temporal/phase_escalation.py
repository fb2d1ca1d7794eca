"""`ctx.phase(on_fail="escalate")` on Temporal: a phase that failed for good, given to a person.

The engine's behaviour (keel.engine.phase), with Temporal's durable parts:

- round `n` opens the escalation `<run>:<phase key>` (then `~2`, `~3`, ...) in Keel's
  store through the `keel.people` local activity, with the packet the engine builds
  (`phase_packet`; its journal read there from the entries the phase's steps wrote)
  and the journal entry `<phase key>/escalation<suffix>` that marks it;
- the decision arrives as the update `keel.decide`, whose validator refuses edits that
  do not fit the state model (`edited_state`), so they never enter history;
- an accepted resolution is checked again on the edited state by the phase's checks,
  as the durable operation `<phase key>/verdict<suffix>` (run once; replay takes the
  verdict from history). Passing applies the edits and passes the phase (its entry in
  Keel's store with fallback "human"); failing opens the next round, saying why;
- a rejection fails the phase with `keel.EscalationRejected`.

Example (the workflow code is the engine's):
    async with ctx.phase("respond", check=draft_is_sendable, on_fail="escalate"):
        ctx.state.draft = await ctx.llm.text(prompt, name="draft")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keel.backends.temporal.decisions import current
from keel.backends.temporal.people import act
from keel.engine.journal import Scope
from keel.engine.phase import (
    checkpoint_messages,
    edited_state,
    phase_packet,
    phase_reason,
    phase_rejected,
    refused_reason,
    round_suffix,
)
from keel.engine.serde import digest
from keel.errors import from_structured, structured
from keel.types import Escalation, StepKind

if TYPE_CHECKING:
    from keel.backends.temporal.phase import TemporalPhase
    from keel.engine.state import StateTracker
    from keel.types import StructuredError


async def escalate_phase(
    p: TemporalPhase, number: int, messages: list[str], exc: BaseException | None
) -> bool:
    """Ask a person to accept phase `p` (optionally editing the state) or reject it:
    True once it passes (the block's error, if any, is suppressed); raises
    `keel.EscalationRejected` on a rejection."""
    from temporalio import workflow

    run = p.port.run
    reason = phase_reason(p.name, number + 1, messages)
    err = structured(exc, step=p.key) if exc is not None else None
    tracker = p.parent.state
    decisions = current()
    n = 1
    while True:
        suffix = round_suffix(n)
        esc_id = f"{run.id}:{p.key}{suffix}"
        decisions.expect(esc_id, "escalation", _fits(tracker))
        await _open(p, number, n, esc_id, reason, messages, err, workflow.now().timestamp())
        decision = await decisions.wait(esc_id, None, f"{p.key}/resolution{suffix}")
        await _settle(p, n, esc_id, decision)
        if decision.get("status") != "resolved":
            break
        edits = decision.get("result")
        bad_fit, failed = await _verify(p, n, edits)
        if not bad_fit and not failed:
            if isinstance(edits, dict) and edits and tracker is not None:
                tracker.apply(edits)  # the reviewer's corrections become the state
            p.passed = True
            await _finish(p, number + 1, None)
            return True
        reason = refused_reason(p.name, esc_id, decision.get("by", "someone"), bad_fit, failed)
        messages, err = bad_fit or failed, None
        n += 1
    failure = structured(phase_rejected(p.name, p.key, esc_id, decision), step=p.key)
    failure.fallback = "human"
    await _finish(p, number + 1, failure)
    raise from_structured(failure)


def _fits(tracker: StateTracker | None) -> Callable[[dict[str, Any]], list[str]]:
    """The update validator's check: a resolution's edits must fit the state model."""

    def check(decision: dict[str, Any]) -> list[str]:
        if decision.get("status") != "resolved":
            return []
        return _bad_fit(tracker, decision.get("result"))[1]

    return check


def _bad_fit(tracker: StateTracker | None, edits: Any) -> tuple[Any, list[str]]:
    """The edited state (None without state), or what is wrong with `edits`."""
    if tracker is None:
        if edits not in (None, {}):
            return None, ["this workflow has no state to edit: resolve with no result"]
        return None, []
    value, found = edited_state(tracker.model, tracker.snapshot(), edits)
    return value, found


async def _verify(p: TemporalPhase, n: int, edits: Any) -> tuple[list[str], list[str]]:
    """Why a resolution cannot pass the phase: (does not fit the state, fails the
    checkpoint). The checkpoint runs once, as a durable operation."""
    from keel.backends.temporal.operation import TemporalOperation

    value, bad_fit = _bad_fit(p.parent.state, edits)
    if bad_fit:  # refused by the validator; this guards older histories
        return bad_fit, []
    if not p.checks:
        return [], []
    key = f"{p.key}/verdict{round_suffix(n)}"
    scope = Scope(path=f"{p.key}/")
    op = TemporalOperation(
        p.port, scope, StepKind.PHASE, p.name, digest("resolution", n), key, p.retries + 2 * n
    )

    async def check() -> list[str]:
        return await checkpoint_messages(p.checks, value)

    failed: list[str] = await op.run(check, list[str])
    return [], failed


def _entry(p: TemporalPhase, key: str, pos: int, kind: StepKind, name: str) -> dict[str, Any]:
    """A journal entry under the phase, as `keel.people` writes it (JSON)."""
    from temporalio import workflow

    return {
        "run_id": p.port.run.id,
        "key": key,
        "scope": f"{p.key}/",
        "pos": pos,
        "kind": kind.value,
        "name": name,
        "digest": "",
        "started": workflow.now().timestamp(),
        "attempts": 1,
    }


async def _open(
    p: TemporalPhase,
    number: int,
    n: int,
    esc_id: str,
    reason: str,
    messages: list[str],
    err: StructuredError | None,
    now: float,
) -> None:
    """Open escalation round `n` in Keel's store, with the entry that marks it."""
    run = p.port.run
    packet = phase_packet(run, p.key, p.name, p.parent.state, p.checks, reason, messages, err)
    escalation = Escalation(
        id=esc_id,
        run_id=run.id,
        workflow=run.workflow,
        queue=p.queue,
        kind="phase",
        step=p.key,
        packet=packet,
        created_at=now,
    )
    key = f"{p.key}/escalation{round_suffix(n)}"
    marker = {
        **_entry(p, key, p.retries + 2 * n - 1, StepKind.PHASE, "escalation"),
        "output": esc_id,
    }
    opened = {"op": "escalate", "escalation": escalation.model_dump(mode="json")}
    await act({**opened, "prefix": f"{p.key}/{number}/", "entry": marker}, key)


async def _settle(p: TemporalPhase, n: int, esc_id: str, decision: dict[str, Any]) -> None:
    """The decision in Keel's store: the escalation decided, and the resolution's entry."""
    key = f"{p.key}/resolution{round_suffix(n)}"
    entry = _entry(p, key, p.retries + 2 * n, StepKind.SIGNAL, f"escalation:{esc_id}")
    settle = {"op": "settle", "id": esc_id, "kind": "escalation", "decision": decision}
    await act({**settle, "entry": {**entry, "output": decision}}, key)


async def _finish(p: TemporalPhase, attempts: int, failure: StructuredError | None) -> None:
    """The phase's own entry in Keel's store, as the engine writes it (fallback "human")."""
    entry = {
        **_entry(p, p.key, p.pos, StepKind.PHASE, p.name),
        "scope": p.parent.path,
        "digest": digest(p.name, p.retries),
        "started": p.started,
        "attempts": attempts,
        "fallback": "human",
    }
    if failure is not None:
        entry["error"] = failure.model_dump(mode="json")
    await act({"op": "record", "entry": entry}, p.key)


__all__ = ["escalate_phase"]
