"""Irreversible effects on Temporal: an intent in Keel's store before the effect.

Temporal retries an activity whose worker died (after its start-to-close timeout) and
re-runs a local activity whose outcome never reached history; neither knows whether
the effect happened. So, as on Keel's engine, an irreversible tool's attempt first
records its intent (a PENDING journal entry with no error) in Keel's store, and then
runs. An attempt that finds an intent without an outcome knows an earlier one died
mid-effect: the tool's `reconcile(idempotency_key)` decides (raising
`keel.EffectNotApplied` lets the effect run again), and without a reconcile hook the
step fails with `keel.OutcomeUnknown`, never re-running the effect blindly. An
attempt that finds the step already done (its worker died after recording the
outcome, before Temporal learnt it) returns that recorded outcome.

Example (inside the `keel.call` activity):
    value = await once(app.store, entry, effect, reconcile, "charge")
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from keel.backends.temporal.mirror import Entry, record
from keel.engine.control import StepInfo
from keel.errors import EffectNotApplied, OutcomeUnknown
from keel.types import StepStatus

if TYPE_CHECKING:
    from keel.store import Store


@dataclass(frozen=True, slots=True)
class Recorded:
    """The outcome an earlier attempt recorded (JSON): the effect is not run again."""

    data: bytes


async def once(
    store: Store,
    entry: Entry,
    effect: Callable[[], Awaitable[Any]],
    reconcile: Callable[[str], Awaitable[Any]] | None,
    name: str,
) -> Any:
    """Run an irreversible `effect` at most once across attempts and workers: its value,
    what `reconcile` says became of an interrupted attempt, or `Recorded`."""
    from keel.engine.serde import to_json

    prior = await _prior(store, entry.run_id, entry.key)
    if prior is not None and prior.status is StepStatus.OK:
        if prior.blob is not None:
            return Recorded(await store.load_blob(prior.blob))
        return Recorded(to_json(prior.output, what=f"step {entry.key!r}"))
    if prior is not None and prior.status is StepStatus.PENDING and prior.error is None:
        idem = StepInfo(entry.run_id, entry.key, 0).idempotency_key
        if reconcile is None:
            raise OutcomeUnknown(
                f"tool {name!r} (step {entry.key!r}) may or may not have taken effect: its "
                "worker stopped after recording the intent and before recording the result. "
                f"Check the outside system for idempotency key {idem!r}, or give the tool a "
                "reconcile= hook so Keel can decide by itself.",
                tool=name,
                idempotency_key=idem,
            )
        try:
            return await reconcile(idem)
        except EffectNotApplied:
            pass  # it did not happen: run it, under a new intent
    intent = replace(entry, data=None, error=None, pending=True)
    await record(store, intent, strict=True)  # no intent on record: no effect
    return await effect()


async def _prior(store: Store, run_id: str, key: str) -> Any:
    for rec in await store.load_steps(run_id):
        if rec.key == key:
            return rec
    return None


__all__ = ["Recorded", "once"]
