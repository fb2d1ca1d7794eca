"""An irreversible tool never runs without approval and runs exactly once after it,
whatever point around the decision the worker is SIGKILLed at.

Worker subprocesses run tests/apps/hitl_app.py. `pay` is irreversible with a
reconcile hook that checks the effect file by idempotency key; `wire` is
irreversible without one. Every execution is logged (exec.log) and every effect is
a file created at most once (effects/), so "ran" and "took effect" are observable.
"""

from __future__ import annotations

from typing import Any

import keel
from tests.apps.harness import Harness
from tests.limits import WAIT

APP = "tests.apps.hitl_app"


async def _reviews(app: keel.App, run_id: str) -> list[Any]:
    return [r for r in await app.approvals.list(status="all") if r.run_id == run_id]


def _runs_of(h: Harness, run_id: str) -> int:
    return h.execution_counts()[f"{run_id}:pay#0"] + h.execution_counts()[f"{run_id}:wire#0"]


async def test_no_run_without_approval_across_kills_then_exactly_once(
    worker_harness: Harness,
) -> None:
    """Killed (1) while the request is undecided, (2) with the decision stored but the run
    not resumed, (3) after the resumed run journaled the decision, before the tool."""
    h = worker_harness
    app = h.app(APP)
    w1 = h.spawn(APP)
    await h.wait_ready(w1)
    await app.start("payout", {"account": "acme", "amount": 10}, id="undecided", execute=False)
    await app.start("payout", {"account": "bolt", "amount": 20}, id="decided", execute=False)
    for run_id in ("undecided", "decided"):
        info = await h.wait_status(app, run_id, "WAITING", procs=[w1])
        assert info.waiting_on == [f"review:{run_id}:approval:pay#0"]
    assert h.executions() == [] and h.effects() == []

    # 1. killed while the requests are undecided
    kill = await h.kill(w1, app)
    assert kill.log_len == 0
    assert "undecided:approval:pay#0" not in kill.journaled  # the review step is pending

    # 2. decided while no worker is alive: stored, the run not resumed yet
    [req] = await _reviews(app, "decided")
    decided = await app.approvals.approve(req.id, by="alice", note="invoice checked")
    assert decided.status == "approved"
    assert (await app.get_run("decided")).status.value == "PENDING"
    assert "pay#0" not in {s.key for s in await app.steps("decided")}
    assert h.executions() == []

    w2 = h.spawn(APP)
    await h.wait_ready(w2)
    info = await h.wait_status(app, "decided", "SUCCEEDED", procs=[w2])
    assert info.result == "paid 20 to bolt"
    assert _runs_of(h, "decided") == 1 and h.effects() == ["decided:pay#0"]

    # The undecided run stayed parked through the restart: nothing ran, no second request.
    assert (await app.get_run("undecided")).status.value == "WAITING"
    assert _runs_of(h, "undecided") == 0
    [pending] = await _reviews(app, "undecided")
    assert pending.status == "pending"
    assert pending.tool == "pay" and pending.args == {"account": "acme", "amount": 10}
    await h.kill(w2, app)
    assert _runs_of(h, "undecided") == 0

    # 3. killed after the resumed run journaled the decision, before the tool's intent
    await app.approvals.approve(pending.id, by="alice")
    w3 = h.spawn(APP, KEEL_TEST_DIE_AFTER_DECISION=1)
    await h.wait_until(lambda: not w3.alive(), timeout=WAIT, what="the worker to die on resume")
    steps = {s.key: s.status.value for s in await app.steps("undecided")}
    assert steps == {
        "approval:pay#0": "pending",
        "approval:pay#0/decision#0": "ok",
    }
    assert _runs_of(h, "undecided") == 0

    w4 = h.spawn(APP)
    await h.wait_ready(w4)
    info = await h.wait_status(app, "undecided", "SUCCEEDED", procs=[w4])
    assert info.result == "paid 10 to acme"
    assert h.execution_counts() == {"decided:pay#0": 1, "undecided:pay#0": 1}
    assert h.effects() == ["decided:pay#0", "undecided:pay#0"]
    assert h.effect_dupes() == []
    for run_id in ("decided", "undecided"):
        journal = [(s.key, s.status.value) for s in await app.steps(run_id)]
        assert journal == [
            ("approval:pay#0", "ok"),
            ("approval:pay#0/decision#0", "ok"),
            ("pay#0", "ok"),
        ]
        [req] = await _reviews(app, run_id)
        assert [e["action"] for e in await app.approvals.audit(req.id)] == [
            "requested",
            "approved",
        ]


async def test_kill_while_the_approved_tool_runs(worker_harness: Harness) -> None:
    h = worker_harness
    app = h.app(APP)
    hold = h.data / "hold"
    hold.mkdir()
    holds = [hold / "acme.before", hold / "bolt.after", hold / "carl.before"]
    for f in holds:
        f.touch()
    w1 = h.spawn(APP)
    await h.wait_ready(w1)
    # r-before: killed before the effect; r-after: killed after it, before the result is
    # journaled; r-unknown: an irreversible tool without reconcile, killed mid-call.
    await app.start("payout", {"account": "acme", "amount": 1}, id="r-before", execute=False)
    await app.start("payout", {"account": "bolt", "amount": 2}, id="r-after", execute=False)
    await app.start("wire_out", {"account": "carl", "amount": 3}, id="r-unknown", execute=False)
    for run_id in ("r-before", "r-after", "r-unknown"):
        await h.wait_status(app, run_id, "WAITING", procs=[w1])
        [req] = await _reviews(app, run_id)
        await app.approvals.approve(req.id, by="alice")

    await h.wait_until(
        lambda: len(h.executions()) == 3 and h.effects() == ["r-after:pay#0"],
        timeout=WAIT,
        what="the three approved calls to be in flight",
        procs=[w1],
    )
    await h.kill(w1, app)
    for run_id, tool in (("r-before", "pay"), ("r-after", "pay"), ("r-unknown", "wire")):
        steps = {s.key: s.status.value for s in await app.steps(run_id)}
        assert steps[f"{tool}#0"] == "pending"  # the intent, recorded before the call
    for f in holds:
        f.unlink()

    w2 = h.spawn(APP)
    await h.wait_ready(w2)
    before = await h.wait_status(app, "r-before", "SUCCEEDED", procs=[w2])
    after = await h.wait_status(app, "r-after", "SUCCEEDED", procs=[w2])
    unknown = await h.wait_status(app, "r-unknown", "FAILED", procs=[w2])

    assert before.result == "paid 1 to acme"
    assert after.result == "paid 2 to bolt"
    # reconcile said "not applied" -> re-run once; "applied" -> its receipt, no re-run
    assert h.execution_counts() == {"r-before:pay#0": 2, "r-after:pay#0": 1, "r-unknown:wire#0": 1}
    assert h.effects() == ["r-after:pay#0", "r-before:pay#0"]  # each payment exactly once
    assert h.effect_dupes() == []
    assert unknown.error is not None and unknown.error.type == "OutcomeUnknown"
    assert "r-unknown:wire#0" in unknown.error.message
    # The approval was not asked again after the crash.
    for run_id in ("r-before", "r-after", "r-unknown"):
        [req] = await _reviews(app, run_id)
        assert req.status == "approved"
        assert [e["action"] for e in await app.approvals.audit(req.id)] == [
            "requested",
            "approved",
        ]
