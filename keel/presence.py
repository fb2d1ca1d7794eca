"""Which workers are live, and what to tell someone whose decision waits for one.

Every worker refreshes its row in the store once per heartbeat (`lease_seconds / 3`,
10 s by default) and deletes it on a clean exit. A worker is live while its last
heartbeat is younger than three heartbeat intervals (its `lease_seconds`, 30 s by
default), so a killed worker stops counting within that time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from keel.hitl.delivery import executed_elsewhere
from keel.host import StoreHost
from keel.store.records import WorkerBeat
from keel.types import RunInfo, RunStatus


class Watched(StoreHost, Protocol):
    """What presence needs from the application (`keel.App` is one): its store, and
    whether this process's own embedded worker watches a run."""

    def _resumes_here(self, run_id: str) -> bool: ...


START_HINT = "start one: keel worker MODULE (or keel serve --worker MODULE)"


async def workers(app: StoreHost) -> list[WorkerBeat]:
    """Every worker that sent a heartbeat, live or not, the most recently seen first.

    Example:
        gone = [w for w in await workers(app) if not w.live(time.time())]
    """
    return await app.store.list_workers()


async def live_workers(app: StoreHost, workflow: str | None = None) -> list[WorkerBeat]:
    """Live workers (of `workflow` if given), the most recently seen first.

    Example:
        for w in await live_workers(app, "triage"):
            print(w.host, w.pid, w.workflows)
    """
    now = time.time()
    return [
        w
        for w in await workers(app)
        if w.live(now) and (workflow is None or workflow in w.workflows)
    ]


@dataclass(frozen=True)
class ResumeNotice:
    """Whether a live worker will pick a decided run up, said in one line."""

    worker_live: bool
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"worker_live": self.worker_live, "message": self.message}


async def resume_notice(
    app: Watched,
    run_id: str,
    then: str = "resumes",
    run: RunInfo | None = None,
    *,
    decided: bool = False,
) -> ResumeNotice:
    """What happens to `run_id` now that it may go on: `run R resumes` only when a live
    worker serves its workflow; otherwise what to start. `then` says what the run does;
    `run` is the run as the caller just read it (else it is read here). `decided`: the
    run was waiting on the decision (or signal) the caller just made."""
    if run is None:
        run = await app.store.get_run(run_id)
    if run is None:
        return ResumeNotice(False, f"run {run_id} is not in {app.store_url}")
    if decided and run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        # It was waiting when the decision landed, so a worker took it on and it has
        # ended since (a fast worker beats this read, on a networked store most often).
        return ResumeNotice(True, f"run {run_id} {then}")
    if run.status.terminal:
        return ResumeNotice(False, f"run {run_id} already ended {run.status.value}")
    elsewhere = executed_elsewhere(run)
    if elsewhere is not None:  # its executor's workers take it on, not Keel's
        return ResumeNotice(True, f"run {run_id} {then} (on {elsewhere})")
    if app._resumes_here(run_id):
        return ResumeNotice(True, f"run {run_id} {then}")
    workers = await live_workers(app, run.workflow)
    if any(not w.embedded for w in workers):
        return ResumeNotice(True, f"run {run_id} {then}")
    if workers:
        w = workers[0]
        return ResumeNotice(
            False,
            f"run {run_id} {then} only if the process that started it still runs (an "
            f"embedded worker, {w.host} pid {w.pid}); no `keel worker` serves workflow "
            f"{run.workflow!r} — {START_HINT}",
        )
    return ResumeNotice(
        False,
        f"no live worker serves workflow {run.workflow!r}, so run {run_id} waits — "
        f"{START_HINT}",
    )


async def unserved(app: Watched, runs: Iterable[tuple[str, str]]) -> list[str]:
    """The workflows of these `(run_id, workflow)` pairs that no live `keel worker`
    serves (a run this process's embedded worker watches is served)."""
    waiting = {wf for run_id, wf in runs if not app._resumes_here(run_id)}
    if not waiting:
        return []
    served = {name for w in await live_workers(app) if not w.embedded for name in w.workflows}
    return sorted(waiting - served)
