"""`PeopleStore`: requests to people (approvals, low-confidence, novelty and sampled
reviews; escalations) and the append-only audit log of what people decided.

Requests are opened through `JournalStore.commit` (with the journal entries that go
with them); this interface reads, decides and moves them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from keel.store.records import AuditEntry
from keel.types import Escalation, ReviewRequest


class PeopleStore(abc.ABC):
    """Reviews, escalations and the audit log.

    Example:
        for req in await store.list_reviews("approval", "pending", queue="payments"):
            await store.decide_review(req.id, "approved", {}, "alice", time.time(), sig)
    """

    # -- reviews ------------------------------------------------------------------

    @abc.abstractmethod
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
        """Reviews matching every filter given, the oldest first; with `latest_decided`,
        decided ones only, the latest decision first. At most `limit`."""

    @abc.abstractmethod
    async def count_reviews(self, kinds: Sequence[str], status: str, queue: str) -> int:
        """How many requests of these kinds are in `status` in `queue`."""

    @abc.abstractmethod
    async def get_review(self, review_id: str) -> ReviewRequest | None:
        """The review, or None."""

    @abc.abstractmethod
    async def decide_review(
        self,
        review_id: str,
        status: str,
        decision: dict[str, Any],
        by: str,
        now: float,
        signal: str | None,
    ) -> ReviewRequest:
        """Decide a pending review once, audit it, and (with `signal`) wake its run by
        sending that signal the decision, all in one transaction. Returns the decided
        review. Raises `RunNotFound` for an unknown id, `Conflict` if already decided."""

    @abc.abstractmethod
    async def requeue_review(
        self, review_id: str, queue: str, deadline: float | None, now: float
    ) -> bool:
        """Move a still-pending review to another queue with a new deadline (timeout
        escalation), audited; False if it is no longer pending."""

    @abc.abstractmethod
    async def replace_review(self, old_id: str, review: ReviewRequest, now: float) -> bool:
        """Reservoir sampling: swap a still-pending sample for `review` (audited); False,
        changing nothing, if `old_id` is no longer pending."""

    @abc.abstractmethod
    async def count_sample(self, workflow: str, day: str) -> int:
        """Count one more completed run of `workflow` on `day`; return the new count."""

    # -- escalations --------------------------------------------------------------

    @abc.abstractmethod
    async def list_escalations(
        self,
        status: str | None = None,
        queue: str | None = None,
        limit: int = 100,
        *,
        run_id: str | None = None,
    ) -> list[Escalation]:
        """Escalations matching every filter given, the newest first, at most `limit`."""

    @abc.abstractmethod
    async def get_escalation(self, escalation_id: str) -> Escalation | None:
        """The escalation, or None."""

    @abc.abstractmethod
    async def resolve_escalation(
        self, escalation_id: str, status: str, resolution: dict[str, Any], by: str, now: float
    ) -> Escalation:
        """Decide an open escalation once and wake its run (signal `escalation:<id>`).
        Raises `RunNotFound` for an unknown id, `Conflict` if already decided."""

    # -- audit --------------------------------------------------------------------

    @abc.abstractmethod
    async def audit_log(self, target: str | None = None, limit: int = 200) -> list[AuditEntry]:
        """Audit entries (of `target`, if given), the oldest first, at most `limit`."""
