"""Approvals in one process: what a request holds, approve / reject / edit, decisions
taken once, reviewer groups, the append-only audit log and notifications.

(SIGKILLs around the decision: tests/test_hitl_crash.py; deadlines:
tests/test_hitl_timeouts.py.)
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

import keel
from keel.engine.runtime import Settings
from keel.hitl import Approval
from tests.backends import fresh_url
from tests.limits import WAIT

SETTLE = WAIT  # a bound, never a timing (tests/limits.py)


@pytest.fixture
async def hitl_app(store_url: str) -> AsyncIterator[Callable[..., keel.App]]:
    """Apps on this test's store, with `reviewers=` / `notify=`; closed at teardown."""
    apps: list[keel.App] = []

    def make(**kwargs: Any) -> keel.App:
        app = keel.App(store_url, settings=Settings(poll_interval=0.02), **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


class Case(BaseModel):
    customer: str = ""
    internal_notes: list[str] = []


def refund_app(app: keel.App, calls: list[tuple[str, int]]) -> tuple[Any, Any]:
    """An irreversible `refund` behind a payments approval, and workflows calling it."""

    @app.tool(
        irreversible=True,
        approval=Approval(
            queue="payments",
            reason="refunds move money",
            context=lambda state: {"customer": state.customer},
        ),
    )
    async def refund(order: str, amount: Annotated[int, Field(gt=0)]) -> str:
        calls.append((order, amount))
        return f"refunded {amount} on {order}"

    @app.workflow(state=Case)
    async def handle(ctx: keel.Context, order: str, amount: int, customer: str) -> str:
        ctx.state.customer = customer
        ctx.state.internal_notes.append("not for the reviewer")
        return await ctx.call(refund, order, amount)

    @app.workflow(state=Case)
    async def handle_or_apologise(ctx: keel.Context, order: str, amount: int) -> str:
        try:
            return await ctx.call(refund, order, amount)
        except keel.ApprovalRejected as exc:
            return f"sorry: {exc.reason} ({exc.by})"  # type: ignore[attr-defined]

    return handle, handle_or_apologise


async def waiting(handle: keel.RunHandle) -> keel.RunInfo:
    info = await handle.settle(SETTLE)
    assert info.status is keel.RunStatus.WAITING, info
    return info


async def only_request(app: keel.App, **filters: Any) -> Any:
    [req] = await app.approvals.list(**filters)
    return req


async def actions(app: keel.App, review_id: str) -> list[str]:
    return [e["action"] for e in await app.approvals.audit(review_id)]


# -- the request and the approve path --------------------------------------------------


async def test_irreversible_tool_waits_for_a_person_then_runs_once(
    hitl_app: Callable[..., keel.App],
) -> None:
    app = hitl_app()
    calls: list[tuple[str, int]] = []
    handle_wf, _ = refund_app(app, calls)
    incoming = {"order": "o-7", "amount": 40, "customer": "c-3"}
    handle = await app.start(handle_wf, incoming, id="r1")
    info = await waiting(handle)
    assert calls == []

    req = await only_request(app)
    assert (req.id, req.run_id, req.step) == ("r1:approval:refund#0", "r1", "approval:refund#0")
    assert info.waiting_on == [f"review:{req.id}"]
    assert (req.kind, req.queue, req.status, req.workflow) == (
        "approval",
        "payments",
        "pending",
        "handle",
    )
    assert req.tool == "refund" and req.args == {"order": "o-7", "amount": 40}
    assert req.request["incoming"] == incoming  # the request that started the run
    assert req.request["context"] == {"customer": "c-3"}  # what the workflow chose to show
    assert "not for the reviewer" not in json.dumps(req.request)
    assert req.reason == req.request["reason"] == "refunds move money"  # typed, as in the JSON
    assert req.request["args_schema"]["properties"]["amount"]["exclusiveMinimum"] == 0
    assert await app.approvals.get(req.id) == req

    decided = await app.approvals.approve(req.id, by="alice", note="matches the invoice")
    assert decided.status == "approved" and decided.decided_by == "alice"
    assert await handle.result(SETTLE) == "refunded 40 on o-7"
    assert calls == [("o-7", 40)]
    steps = [(s.key, s.kind.value, s.status.value) for s in await app.steps("r1")]
    assert steps == [
        ("approval:refund#0", "review", "ok"),
        ("approval:refund#0/decision#0", "signal", "ok"),
        ("refund#0", "tool", "ok"),
    ]
    # Starting the same run id again runs nothing again.
    assert await (await app.start(handle_wf, incoming, id="r1")).result(SETTLE) == (
        "refunded 40 on o-7"
    )
    assert calls == [("o-7", 40)]
    assert await app.approvals.list() == []
    assert [r.status for r in await app.approvals.list(status="approved")] == ["approved"]


async def test_conditions_and_opting_out(hitl_app: Callable[..., keel.App]) -> None:
    app = hitl_app()
    ran: list[str] = []

    @app.tool(approval=Approval(when=lambda amount, **_: amount > 100))
    async def transfer(to: str, amount: int) -> str:
        ran.append(f"transfer {amount}")
        return "ok"

    @app.tool(irreversible=True, approval=False)
    async def log_event(text: str) -> str:
        ran.append(text)
        return "logged"

    @app.workflow()
    async def move(ctx: keel.Context, amount: int) -> str:
        await ctx.call(log_event, "start")
        return await ctx.call(transfer, "acct-1", amount)

    assert await (await app.start(move, {"amount": 50})).result(SETTLE) == "ok"
    assert ran == ["start", "transfer 50"] and await app.approvals.list() == []

    big = await app.start(move, {"amount": 500})
    await waiting(big)
    req = await only_request(app)
    assert req.args == {"to": "acct-1", "amount": 500} and req.queue == "approvals"
    assert ran == ["start", "transfer 50", "start"]
    await app.approvals.approve(req.id)  # an unlisted queue: anyone may decide
    assert await big.result(SETTLE) == "ok"
    assert ran[-1] == "transfer 500"


async def test_explicit_ctx_approval(hitl_app: Callable[..., keel.App]) -> None:
    app = hitl_app()

    @app.workflow()
    async def deploy(ctx: keel.Context, version: str) -> str:
        decision = await ctx.approval(
            {"name": "deploy", "version": version},
            context={"diff": "+3 -1"},
            reason="production deploys need a second person",
            queue="deploys",
        )
        return f"{version} deployed ({decision.by}: {decision.note})"

    handle = await app.start(deploy, {"version": "v2"})
    await waiting(handle)
    req = await only_request(app, queue="deploys")
    assert req.step == "approval:deploy#0" and req.tool is None
    assert req.request["action"] == {"name": "deploy", "version": "v2"}
    assert req.request["context"] == {"diff": "+3 -1"}
    assert req.request["reason"] == "production deploys need a second person"
    assert req.request["incoming"] == {"version": "v2"}
    with pytest.raises(keel.InputError, match="not a tool approval"):
        await app.approvals.edit(req.id, {"version": "v3"})
    await app.approvals.approve(req.id, by="dana", note="green CI")
    assert await handle.result(SETTLE) == "v2 deployed (dana: green CI)"


# -- reject ---------------------------------------------------------------------------


async def test_reject_raises_approval_rejected_which_the_workflow_can_handle(
    hitl_app: Callable[..., keel.App],
) -> None:
    app = hitl_app()
    calls: list[tuple[str, int]] = []
    handle_wf, handle_or_apologise = refund_app(app, calls)

    caught = await app.start(handle_or_apologise, {"order": "o-1", "amount": 5})
    await waiting(caught)
    req = await only_request(app)
    with pytest.raises(keel.InputError, match="needs a reason"):
        await app.approvals.reject(req.id, "  ", by="alice")
    assert (await app.approvals.get(req.id)).status == "pending"
    await app.approvals.reject(req.id, "duplicate of o-0", by="alice")
    assert await caught.result(SETTLE) == "sorry: duplicate of o-0 (alice)"

    uncaught = await app.start(handle_wf, {"order": "o-2", "amount": 5, "customer": "c"})
    await waiting(uncaught)
    req = await only_request(app)
    await app.approvals.reject(req.id, "fraud suspected", by="alice")
    with pytest.raises(keel.RunFailed) as failed:
        await uncaught.result(SETTLE)
    err = failed.value.error
    assert err is not None and err.type == "ApprovalRejected"
    assert "rejected by alice: fraud suspected" in err.message
    assert calls == []  # a rejected call never runs
    assert await actions(app, req.id) == ["requested", "rejected"]
    assert (await app.approvals.get(req.id)).decision == {
        "status": "rejected",
        "reason": "fraud suspected",
        "by": "alice",
    }


# -- edit then approve ----------------------------------------------------------------


async def test_edited_arguments_reach_the_tool_and_the_trace_keeps_both(
    hitl_app: Callable[..., keel.App],
) -> None:
    app = hitl_app()
    calls: list[tuple[str, int]] = []
    handle_wf, _ = refund_app(app, calls)
    handle = await app.start(handle_wf, {"order": "o-9", "amount": 400, "customer": "c"}, id="e1")
    await waiting(handle)
    req = await only_request(app)

    bad: list[tuple[dict[str, Any], str]] = [
        ({"order": "o-9", "amount": "lots"}, "amount: expected integer"),
        ({"order": "o-9", "amount": 0}, "amount: must be > 0"),
        ({"order": "o-9"}, "amount: required"),
        ({"order": "o-9", "amount": 40, "amnt": 4}, "amnt: not a parameter"),
    ]
    for args, message in bad:
        with pytest.raises(keel.InputError, match=message) as refused:
            await app.approvals.edit(req.id, args, by="alice")
        assert "edited arguments for refund are invalid" in refused.value.message
    # Nothing was decided by the refused edits.
    assert (await app.approvals.get(req.id)).status == "pending"
    assert await actions(app, req.id) == ["requested"]
    assert (await app.get_run("e1")).status is keel.RunStatus.WAITING

    edited = await app.approvals.edit(
        req.id, {"order": "o-9", "amount": 40}, by="alice", note="one zero too many"
    )
    assert edited.status == "edited"
    assert await handle.result(SETTLE) == "refunded 40 on o-9"
    assert calls == [("o-9", 40)]

    by_key = {s.key: s for s in await app.steps("e1")}
    decision = by_key["approval:refund#0"].output
    assert decision["status"] == "edited" and decision["by"] == "alice"
    assert decision["original"] == {"order": "o-9", "amount": 400}
    assert decision["args"] == {"order": "o-9", "amount": 40}
    assert decision["note"] == "one zero too many"
    assert by_key["refund#0"].output == "refunded 40 on o-9"
    log = await app.approvals.audit(req.id)
    assert [e["action"] for e in log] == ["requested", "edited"]
    assert log[1]["actor"] == "alice"
    # what was changed, not the values: those stay with the request and go with the run
    assert log[1]["detail"]["changed"] == ["amount"]
    assert "400" not in str(log[1]["detail"])


# -- once, by the right people, on the record -----------------------------------------


async def test_a_request_is_decided_once(hitl_app: Callable[..., keel.App]) -> None:
    app = hitl_app()
    calls: list[tuple[str, int]] = []
    handle_wf, _ = refund_app(app, calls)
    handle = await app.start(handle_wf, {"order": "o-1", "amount": 9, "customer": "c"})
    await waiting(handle)
    req = await only_request(app)

    # Two reviewers at the same moment: exactly one decision wins.
    results = await asyncio.gather(
        app.approvals.approve(req.id, by="alice"),
        app.approvals.reject(req.id, "no", by="alice"),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    status = (await app.approvals.get(req.id)).status
    for second in (
        app.approvals.approve(req.id, by="alice"),
        app.approvals.reject(req.id, "changed my mind", by="alice"),
        app.approvals.edit(req.id, {"order": "o-1", "amount": 1}, by="alice"),
    ):
        final = f"already {status} by alice; a decision is final"
        with pytest.raises(keel.ConfigError, match=final):
            await second
    assert await actions(app, req.id) == ["requested", status]
    assert len(calls) <= 1


async def test_reviewer_groups(hitl_app: Callable[..., keel.App]) -> None:
    app = hitl_app(reviewers={"payments": {"alice"}})
    calls: list[tuple[str, int]] = []
    handle_wf, _ = refund_app(app, calls)
    handle = await app.start(handle_wf, {"order": "o-1", "amount": 9, "customer": "c"})
    await waiting(handle)
    req = await only_request(app, queue="payments")

    attempts = [
        app.approvals.approve(req.id, by="bob"),
        app.approvals.reject(req.id, "no", by="bob"),
        app.approvals.edit(req.id, {"order": "o-1", "amount": 1}, by="bob"),
        app.approvals.approve(req.id),  # anonymous
    ]
    for attempt in attempts:
        with pytest.raises(keel.ConfigError, match="not a reviewer of queue 'payments'"):
            await attempt
    assert (await app.approvals.get(req.id)).status == "pending"
    assert await actions(app, req.id) == ["requested"]
    await app.approvals.approve(req.id, by="alice")
    assert await handle.result(SETTLE) == "refunded 9 on o-1"


async def test_audit_log_is_append_only(hitl_app: Callable[..., keel.App]) -> None:
    app = hitl_app()
    calls: list[tuple[str, int]] = []
    handle_wf, _ = refund_app(app, calls)
    handle = await app.start(handle_wf, {"order": "o-1", "amount": 9, "customer": "c"})
    await waiting(handle)
    req = await only_request(app)
    await app.approvals.approve(req.id, by="alice", note="fine")
    await handle.result(SETTLE)
    log = await app.approvals.audit(req.id)
    assert [(e["actor"], e["action"], e["target"]) for e in log] == [
        ("keel", "requested", req.id),
        ("alice", "approved", req.id),
    ]
    assert log[0]["detail"] == {"kind": "approval", "queue": "payments"}
    assert log[1]["detail"]["fields"] == ["args", "note"]  # a reviewer's note is content
    assert "fine" not in str(log[1]["detail"])
    # No interface edits or deletes an entry; that the table itself refuses SQL that
    # tries is SQLite's test: tests/store/sqlite/test_sqlite_file.py.
    assert [e.actor for e in await app.store.audit_log(req.id)] == ["keel", "alice"]


# -- notifications --------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(500 if "status=500" in self.path else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    handler = type("Hook", (_Hook,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/review", handler.received
    finally:
        server.shutdown()
        server.server_close()


async def test_notifications_reach_a_callable_and_a_webhook(
    hitl_app: Callable[..., keel.App],
    webhook: tuple[str, list[dict[str, Any]]],
    wait_until: Callable[..., Any],
) -> None:
    seen: list[dict[str, Any]] = []
    url, received = webhook
    for notify in (seen.append, url):
        app = hitl_app(notify=notify)
        calls: list[tuple[str, int]] = []
        handle_wf, _ = refund_app(app, calls)
        handle = await app.start(handle_wf, {"order": "o-1", "amount": 9, "customer": "c"})
        await waiting(handle)
        await app.close()

    await wait_until(lambda: len(received) == 1, "the webhook call")
    [by_callable] = seen
    [posted] = received
    assert posted["event"] == "review.requested"
    for review in (by_callable, posted["review"]):
        assert review["kind"] == "approval" and review["queue"] == "payments"
        assert review["status"] == "pending"
        assert review["id"].endswith(":approval:refund#0")
        assert review["request"]["action"] == {
            "tool": "refund",
            "args": {"order": "o-1", "amount": 9},
        }
        assert review["request"]["reason"] == "refunds move money"
    assert by_callable["run_id"] != posted["review"]["run_id"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _boom_async(review: dict[str, Any]) -> None:
    raise RuntimeError("pager is down")


def _boom(review: dict[str, Any]) -> None:
    raise RuntimeError("pager is down")


@pytest.mark.parametrize(
    "notify",
    [_boom, _boom_async, f"http://127.0.0.1:{_closed_port()}/nothing-listens"],
    ids=["raising-callable", "raising-coroutine", "unreachable-webhook"],
)
async def test_a_failing_notifier_never_blocks_the_run(
    hitl_app: Callable[..., keel.App], notify: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = hitl_app(notify=notify)
    calls: list[tuple[str, int]] = []
    handle_wf, _ = refund_app(app, calls)
    handle = await app.start(handle_wf, {"order": "o-1", "amount": 9, "customer": "c"})
    await waiting(handle)
    req = await only_request(app)
    await app.approvals.approve(req.id, by="alice")
    assert await handle.result(SETTLE) == "refunded 9 on o-1"
    for part in app._drainable:
        await part.drain()
    assert any("notifying about review" in r.getMessage() for r in caplog.records)


async def test_a_webhook_answering_500_never_blocks_the_run(
    hitl_app: Callable[..., keel.App],
    webhook: tuple[str, list[dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, received = webhook
    app = hitl_app(notify=url + "?status=500")
    calls: list[tuple[str, int]] = []
    handle_wf, _ = refund_app(app, calls)
    handle = await app.start(handle_wf, {"order": "o-1", "amount": 9, "customer": "c"})
    await waiting(handle)
    await app.approvals.approve((await only_request(app)).id, by="alice")
    assert await handle.result(SETTLE) == "refunded 9 on o-1"
    for part in app._drainable:
        await part.drain()
    assert len(received) == 1  # it was called, answered 500, and the run went on
    assert any("HTTP Error 500" in r.getMessage() for r in caplog.records)


async def test_reviewer_groups_come_from_keel_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI builds a bare App: keel.toml's [keel.reviewers] must still bind it."""
    (tmp_path / "keel.toml").write_text('[keel.reviewers]\npayments = ["alice"]\n')
    monkeypatch.chdir(tmp_path)
    app = keel.App(fresh_url(tmp_path))
    assert app.reviewers == {"payments": {"alice"}}
    assert keel.App(fresh_url(tmp_path), reviewers={}).reviewers == {}
