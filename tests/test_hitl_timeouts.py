"""Approval deadlines are durable timers: the timeout policy (reject, fail, escalate)
fires after the worker that opened the request is gone.

Worker subprocesses (tests/apps/hitl_app.py) are SIGKILLed while runs wait, and a
new one is started once the deadlines have passed. Deadlines are short; the tests
wait for them to pass but assert no timings.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import keel
from keel.engine.runtime import Settings
from keel.hitl import Approval
from tests.apps.harness import Harness
from tests.limits import WAIT

APP = "tests.apps.hitl_app"
DEADLINE = 2.0  # seconds; the first worker is killed long before it passes


async def _review(app: keel.App, run_id: str) -> Any:
    [req] = [r for r in await app.approvals.list(status="all") if r.run_id == run_id]
    return req


async def _until_past(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.time()) + 0.05)


async def _actions(app: keel.App, review_id: str) -> list[str]:
    return [e["action"] for e in await app.approvals.audit(review_id)]


async def test_timeout_policies_fire_after_a_restart(worker_harness: Harness) -> None:
    h = worker_harness
    app = h.app(APP)
    w1 = h.spawn(APP)
    await h.wait_ready(w1)
    runs: dict[str, dict[str, Any]] = {
        "t-reject": {"policy": "reject", "timeout": DEADLINE, "catch": False},
        "t-fail": {"policy": "fail", "timeout": DEADLINE, "catch": True},
        "t-escalate": {"policy": "escalate", "timeout": DEADLINE, "escalate_timeout": 600},
        "t-escalate-expire": {
            "policy": "escalate",
            "timeout": DEADLINE,
            "escalate_timeout": 1.0,
            "then": "reject",
        },
    }
    for run_id, inputs in runs.items():
        await app.start("deadline", inputs, id=run_id, execute=False)
    for run_id in runs:
        await h.wait_status(app, run_id, "WAITING", procs=[w1])
    await h.kill(w1, app)

    reqs = {run_id: await _review(app, run_id) for run_id in runs}
    # Nothing fired while the first worker lived: every request is pending in its queue.
    assert {r.status for r in reqs.values()} == {"pending"}
    assert {r.queue for r in reqs.values()} == {"refunds"}
    first = reqs["t-escalate"]
    assert first.deadline is not None and first.request["reason"] == "refunds over 20 need a person"
    assert first.request["context"] == {"order": "o-1", "customer": "c-9"}
    await _until_past(max(r.deadline for r in reqs.values()))
    assert {(await _review(app, r)).status for r in runs} == {"pending"}  # no worker: no timer

    w2 = h.spawn(APP)
    await h.wait_ready(w2)

    # reject: the step raises ApprovalRejected naming the policy; uncaught, the run fails
    info = await h.wait_status(app, "t-reject", "FAILED", procs=[w2])
    assert info.error is not None and info.error.type == "ApprovalRejected"
    assert "no decision before its deadline" in info.error.message
    assert "timeout policy: reject" in info.error.message
    assert info.error.data["policy"] == "reject"
    rej = await _review(app, "t-reject")
    assert rej.status == "expired" and rej.decided_by == "keel"
    assert await _actions(app, rej.id) == ["requested", "expired"]

    # fail: the run fails even though the workflow catches the error
    info = await h.wait_status(app, "t-fail", "FAILED", procs=[w2])
    assert info.error is not None and info.error.type == "ApprovalTimedOut"
    assert "timeout policy: fail" in info.error.message

    # escalate: the request moves to the leads' queue with a new deadline, then is decided
    async def escalated() -> Any:
        req = await _review(app, "t-escalate")
        return req if req.queue == "leads" else None

    moved = await h.wait_until(escalated, timeout=WAIT, what="the escalation", procs=[w2])
    assert moved.status == "pending" and moved.deadline > first.deadline
    assert moved.deadline - time.time() > 300  # the escalation's own (long) deadline
    assert await _actions(app, moved.id) == ["requested", "escalated"]
    await h.wait_status(app, "t-escalate", "WAITING", procs=[w2])  # parked again, in leads
    with pytest.raises(keel.ConfigError, match="alice is not a reviewer of queue 'leads'"):
        await app.approvals.approve(moved.id, by="alice")
    await app.approvals.approve(moved.id, by="carol", note="ok after a look")
    info = await h.wait_status(app, "t-escalate", "SUCCEEDED", procs=[w2])
    assert info.result == "approved by carol"
    assert await _actions(app, moved.id) == ["requested", "escalated", "approved"]

    # escalated, and the escalation's deadline passes too: its `then` policy applies
    info = await h.wait_status(app, "t-escalate-expire", "SUCCEEDED", procs=[w2])
    assert info.result.startswith("caught ApprovalRejected:")
    assert "timeout policy: reject" in info.result
    last = await _review(app, "t-escalate-expire")
    assert last.queue == "leads" and last.status == "expired"
    assert await _actions(app, last.id) == ["requested", "escalated", "expired"]


async def test_expiry_is_taken_even_if_the_worker_dies_right_after_storing_it(
    worker_harness: Harness,
) -> None:
    h = worker_harness
    app = h.app(APP)
    w1 = h.spawn(APP, KEEL_TEST_DIE_AFTER_EXPIRY=1)  # SIGKILLs itself once it expired one
    await h.wait_ready(w1)
    await app.start("deadline", {"policy": "reject", "timeout": 0.5}, id="x1", execute=False)
    await h.wait_until(lambda: not w1.alive(), timeout=WAIT, what="the worker to die at expiry")
    req = await _review(app, "x1")
    assert req.status == "expired"
    assert (await app.get_run("x1")).status.value != "SUCCEEDED"

    w2 = h.spawn(APP)
    await h.wait_ready(w2)
    info = await h.wait_status(app, "x1", "SUCCEEDED", procs=[w2], timeout=WAIT)
    assert info.result.startswith("caught ApprovalRejected:")
    assert "timeout policy: reject" in info.result
    assert await _actions(app, req.id) == ["requested", "expired"]


async def test_tool_deadline_fires_in_a_new_app_on_the_same_store(store_url: str) -> None:
    """The gate's own policy (`Approval(timeout=..., on_timeout=...)`), no subprocess:
    the App that opened the request is closed; a new one on the store takes the timeout."""
    calls: list[int] = []

    def build() -> tuple[keel.App, Any]:
        app = keel.App(store_url, settings=Settings(poll_interval=0.02))

        @app.tool(approval=Approval(queue="ops", timeout=1.0, on_timeout="reject"))
        async def restart_service(name: str) -> str:
            calls.append(1)
            return f"restarted {name}"

        @app.workflow()
        async def ops(ctx: keel.Context, name: str) -> str:
            return await ctx.call(restart_service, name)

        return app, ops

    first, ops = build()
    info = await (await first.start(ops, {"name": "db"}, id="op1")).settle(WAIT)
    assert info.status.value == "WAITING"
    [req] = await first.approvals.list()
    await first.close()
    assert req.deadline is not None
    await _until_past(req.deadline)

    second, ops2 = build()
    try:
        assert (await second.approvals.get(req.id)).status == "pending"  # nobody took it yet
        with pytest.raises(keel.RunFailed) as caught:
            await (await second.start(ops2, {"name": "db"}, id="op1")).result(WAIT)
        err = caught.value.error
        assert err is not None and err.type == "ApprovalRejected"
        assert "timeout policy: reject" in err.message
        assert calls == []  # the tool never ran
        assert (await second.approvals.get(req.id)).status == "expired"
    finally:
        await second.close()
