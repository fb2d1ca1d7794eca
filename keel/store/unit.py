"""The unit of work: writes that must land together (a step with the approval it opens,
a model call's usage with its step) go to `JournalStore.commit` as one `UnitOfWork`."""

from __future__ import annotations

from dataclasses import dataclass, field

from keel.store.records import StepWrite
from keel.types import Escalation, ReviewRequest


@dataclass(slots=True)
class UnitOfWork:
    """Writes that land together or not at all.

    The lease (when `owner` is set) is checked once, in the same transaction; each step
    carries its own usage; reviews and escalations are idempotent on their id and each
    newly opened one gets its audit entry.

    Example:
        done = await store.commit(UnitOfWork(run_id, owner, steps=[write], reviews=[req]))
        if req.id in done.opened: notify(req)
    """

    run_id: str
    owner: str | None  # lease holder checked in the same transaction; None: no lease check
    steps: list[StepWrite] = field(default_factory=list)  # journal entries (with their usage)
    reviews: list[ReviewRequest] = field(default_factory=list)  # opened with them (by id)
    escalations: list[Escalation] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Committed:
    """What a committed unit of work changed beyond its journal entries.

    Example:
        Committed(opened=frozenset({"rev_1"}))
    """

    opened: frozenset[str] = frozenset()  # ids of reviews/escalations newly created
