"""Running a suite's cases: each one a real Keel run of the workflow on the eval's own
store, waits for people decided by the suite's `approvals` policy, then read back from
the journal (`EvalRun`) and scored."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from keel.errors import KeelError
from keel.evals.dataset import Case
from keel.evals.run import EvalRun, Score, Scorer
from keel.types import RunInfo, RunStatus

# What the suite does when a case's run waits for a person: approve or reject every
# approval / review it waits on (through app.approvals, as a reviewer would), leave it
# waiting (scored where it stopped), or a callable that decides (it may signal the run).
Decide = Callable[[Any, RunInfo, Case], Awaitable[Any]]
Approvals = Literal["approve", "reject", "leave"] | Decide

REVIEWER = "keel-eval"  # who the audit log says decided, for decisions the suite made
_MAX_DECISIONS = 20  # rounds of deciding per run: a run that keeps asking is left waiting


class HarnessError(KeelError):
    """The eval could not be run or scored (a scorer raised, a bad dataset or baseline):
    `keel eval` exits 1, never 100, since nothing was measured."""


@dataclass
class CaseResult:
    """One case, one repeat: its run, its status and every scorer's score."""

    case: Case
    repeat: int
    run_id: str
    status: str
    scores: dict[str, Score] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(s.ok for s in self.scores.values())


def run_id_for(eval_id: str, case_id: str, repeat: int) -> str:
    """A run id naming the eval, the case and the repeat (case ids may hold spaces)."""
    safe = re.sub(r"[^A-Za-z0-9_.:-]", "_", case_id)[:80]
    if safe != case_id:
        safe += "~" + hashlib.sha256(case_id.encode()).hexdigest()[:8]
    return f"{eval_id}.{safe}.{repeat}"


def isolated_app(app: Any, url: str) -> Any:
    """The same workflows, tools, model gateway and reviewer groups as `app` (the
    suite's own reviewer added to each), over `url`: the eval's runs never land in the
    app's own store."""
    twin = type(app)(
        url,
        settings=app.settings,
        llm=app.gateway,
        # the suite decides approvals as REVIEWER: a member of every reviewer group here
        reviewers={queue: {*people, REVIEWER} for queue, people in app.reviewers.items()},
        redactor=app.redactor,
    )
    twin.registry = app.registry
    return twin


async def _decide(app: Any, info: RunInfo, case: Case, policy: Approvals) -> bool:
    """Apply the approvals policy once; whether anything was decided."""
    if callable(policy):
        got = policy(app, info, case)
        if inspect.isawaitable(got):
            await got
        after = await app.get_run(info.id)
        return (after.status, after.waiting_on, after.updated_at) != (
            info.status,
            info.waiting_on,
            info.updated_at,
        )
    if policy == "leave":
        return False
    acted = False
    for waiting in info.waiting_on:
        if not waiting.startswith("review:"):
            continue  # escalations and plain signals: only a callable policy decides them
        review_id = waiting.removeprefix("review:")
        if policy == "approve":
            await app.approvals.approve(review_id, by=REVIEWER, note="approved by the eval suite")
        else:
            await app.approvals.reject(review_id, "rejected by the eval suite", by=REVIEWER)
        acted = True
    return acted


async def _queues(app: Any, info: RunInfo) -> list[str]:
    """The people queues the waiting run is routed to (approvals, reviews, escalations)."""
    found = []
    for waiting in info.waiting_on:
        kind, _, ident = waiting.partition(":")
        if kind == "review":
            found.append((await app.approvals.get(ident)).queue)
        elif kind == "escalation":
            found.append((await app.escalations.get(ident)).queue)
    return found


async def execute_case(
    app: Any, workflow: Any, case: Case, run_id: str, approvals: Approvals, timeout: float
) -> tuple[RunInfo, list[str], float]:
    """Run one case to its end (or to a wait the policy leaves): the run as it settled,
    the people queues it went to, and the seconds it took."""
    started = time.monotonic()
    handle = await app.start(workflow, case.input, id=run_id)
    queues: list[str] = []
    try:
        info = await handle.settle(timeout)
        for _ in range(_MAX_DECISIONS):
            if info.status is not RunStatus.WAITING:
                break
            queues += [q for q in await _queues(app, info) if q not in queues]
            if not await _decide(app, info, case, approvals):
                break
            info = await handle.settle(timeout)
    except TimeoutError:
        info = await app.cancel(run_id)  # scored as it stands: a run that never settles fails
    return info, queues, time.monotonic() - started


async def score_case(
    app: Any,
    case: Case,
    repeat: int,
    settled: tuple[RunInfo, list[str], float],
    scorers: Sequence[Scorer],
) -> CaseResult:
    """Read the settled run's journal and score it; a scorer that raises is a
    `HarnessError` naming it, the case and the run."""
    info, queues, latency = settled
    # The journal in execution order (as app.steps gives it, without reading the run again)
    steps = sorted(await app.store.load_steps(info.id), key=lambda r: (r.started_at, r.key))
    run = EvalRun(case, repeat, info, steps, queues, latency, app)
    scores: dict[str, Score] = {}
    for scorer in scorers:
        try:
            scores[scorer.name] = await scorer(case, run)
        except Exception as exc:
            raise HarnessError(
                f"scorer {scorer.name!r} raised on case {case.id!r} (run {info.id}):"
                f" {type(exc).__name__}: {exc}"
            ) from exc
    return CaseResult(case, repeat, info.id, info.status.value.lower(), scores)


async def run_cases(
    app: Any,
    workflow: Any,
    cases: Sequence[Case],
    *,
    eval_id: str,
    scorers: Sequence[Scorer],
    repeats: int,
    concurrency: int,
    approvals: Approvals,
    timeout: float,
) -> list[CaseResult]:
    """Every case `repeats` times, at most `concurrency` at once; results in case order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(case: Case, repeat: int) -> CaseResult:
        # `concurrency` bounds the runs in flight; reading and scoring a finished one
        # holds no run slot, so the workflow runs as parallel as it would without evals
        async with gate:
            rid = run_id_for(eval_id, case.id, repeat)
            settled = await execute_case(app, workflow, case, rid, approvals, timeout)
        return await score_case(app, case, repeat, settled, scorers)

    jobs = [one(c, r) for c in cases for r in range(repeats)]
    return list(await asyncio.gather(*jobs))
