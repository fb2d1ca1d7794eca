"""Sampled review: a uniform sample of completed autonomous runs lands in a review queue."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from keel.engine.hooks import Hooks
from keel.engine.recovery import result_schema
from keel.hitl.policy import Sample
from keel.store import UnitOfWork
from keel.types import ReviewRequest, RunStatus

if TYPE_CHECKING:
    from keel.hitl.host import Host
    from keel.types import RunInfo

log = logging.getLogger("keel.hitl")


def _unit(seed: int, run_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{run_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Sampler(Hooks):
    """Decides, when a run succeeds, whether it goes to its workflow's review queue."""

    def __init__(self, app: Host) -> None:
        self.app = app
        self._tasks: set[asyncio.Task[Any]] = set()

    def run_finished(self, run_id: str, workflow: str, status: RunStatus) -> None:
        policy = _policy(self.app, workflow, status)
        if policy is None:
            return
        task = asyncio.get_running_loop().create_task(self.consider(run_id, workflow, policy))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def consider(self, run_id: str, workflow: str, policy: Sample) -> bool:
        try:
            return await self._consider(run_id, workflow, policy)
        except Exception:
            log.exception("sampling run %s failed", run_id)
            return False

    async def _consider(self, run_id: str, workflow: str, policy: Sample) -> bool:
        store = self.app.store
        run = await store.get_run(run_id)
        if run is None:
            return False
        day = dt.datetime.fromtimestamp(run.ended_at or time.time(), dt.UTC).date().isoformat()
        wf = self.app.registry.workflows.get(workflow)
        request: dict[str, Any] = {
            "input": run.input,
            "result": run.result,
            "day": day,
            "reason": "sampled for review",
        }
        schema = result_schema(wf.return_type) if wf is not None else None
        if schema is not None:  # a reviewer's label is checked against it, code loaded or not
            request["schema"] = schema
        review: dict[str, Any] = {
            "id": f"{run_id}:sample",
            "kind": "sample",
            "run_id": run_id,
            "workflow": workflow,
            "step": None,
            "queue": policy.queue,
            "deadline": None,
            "request": request,
        }
        now = time.time()
        if policy.rate is not None:
            if _unit(policy.seed, run_id) >= policy.rate:
                return False
            return self._opened(review, await self._open(review, now), now)
        k = int(policy.per_day or 0)
        n = await store.count_sample(workflow, day)  # this run is the n-th of the day
        if n <= k:  # Algorithm R: the first k fill the reservoir
            review["request"]["slot"] = n - 1
            return self._opened(review, await self._open(review, now), now)
        j = random.Random(f"{policy.seed}:{run_id}").randrange(n)
        if j >= k:
            return False
        review["request"]["slot"] = j
        current = [
            r
            for r in await store.list_reviews("sample", "pending", None, workflow, 10_000)
            if r.request.get("day") == day and r.request.get("slot") == j
        ]
        if not current:  # that slot was already reviewed: the reviewed one stays
            return False
        req = ReviewRequest(**review, status="pending", created_at=now)
        replaced = await store.replace_review(current[0].id, req, now)
        return self._opened(review, replaced, now)

    async def _open(self, review: dict[str, Any], now: float) -> bool:
        """Open a sample (no lease: the run has ended); True if it is new."""
        req = ReviewRequest(**review, status="pending", created_at=now)
        done = await self.app.store.commit(UnitOfWork(req.run_id, None, reviews=[req]))
        return req.id in done.opened

    def _opened(self, review: dict[str, Any], created: bool, now: float) -> bool:
        """Notify (App(notify=...)) about every sample that entered the queue."""
        if created:
            self.app.hooks.review_requested({**review, "status": "pending", "created_at": now})
        return created

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _policy(app: Host, workflow: str, status: RunStatus) -> Sample | None:
    """The sampling policy that applies to a run of `workflow` ending `status`, if any."""
    wf = app.registry.workflows.get(workflow)
    policy = getattr(wf, "sample", None) if wf else None
    if status is not RunStatus.SUCCEEDED or not isinstance(policy, Sample):
        return None
    return policy


async def sample_ended(app: Host, run: RunInfo) -> bool:
    """Consider a run that ended on another executor (Temporal) for its workflow's
    sampled review, as Keel's engine does when its worker ends one; True if it entered
    the queue. Call it once per run: the first time its end is recorded
    (a per-day reservoir counts every call as one more candidate).

    Example (what keel.backends.temporal.ended does):
        if await end_with_state(app.store, info, result_json):
            await sample_ended(app, info)
    """
    policy = _policy(app, run.workflow, run.status)
    if policy is None:
        return False
    return await Sampler(app).consider(run.id, run.workflow, policy)
