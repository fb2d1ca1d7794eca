"""The review console's JSON API (`keel.server`): authentication on every route, roles and
queue groups, approve / reject / edit resuming real waiting runs, validation errors,
double decisions, the failed-login rate limit and hashed tokens."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from pydantic import BaseModel, Field

import keel
from keel.engine.runtime import Settings
from keel.hitl import Approval
from keel.server.access import endpoints
from keel.server.app import create_app
from keel.server.auth import add_user
from keel.server.web import PUBLIC
from keel.store import ConsoleSession
from tests.backends import at_rest
from tests.limits import WAIT

SETTLE = WAIT  # a bound, never a timing (tests/limits.py)


class Account(BaseModel):
    id: str
    tier: str


class Tally(BaseModel):
    figures: list[int] = []
    total: int = 0


def adds_up(s: Tally) -> str | None:
    return None if sum(s.figures) == s.total else f"figures sum to {sum(s.figures)}, not {s.total}"


class Env:
    def __init__(self, app: keel.App, client: httpx.AsyncClient, calls: list[Any]) -> None:
        self.app, self.client, self.calls = app, client, calls
        self.tokens: dict[str, str] = {}
        self.wf: dict[str, Any] = {}

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    async def get(self, path: str, user: str, **kw: Any) -> httpx.Response:
        # review ids hold `#` (e.g. `r1:approval:refund#0`): percent-encode it in URLs
        path = path.replace("#", "%23")
        return await self.client.get(f"/api/v1{path}", headers=self.auth(user), **kw)

    async def post(self, path: str, user: str, body: Any = None) -> httpx.Response:
        path = path.replace("#", "%23")
        return await self.client.post(f"/api/v1{path}", headers=self.auth(user), json=body or {})

    async def delete(self, path: str, user: str) -> httpx.Response:
        return await self.client.delete(f"/api/v1{path}", headers=self.auth(user))

    async def waiting_approval(self, run_id: str, amount: int = 40) -> str:
        handle = await self.app.start(self.wf["pay"], {"order": "o-1", "amount": amount}, id=run_id)
        info = await handle.settle(SETTLE)
        assert info.status is keel.RunStatus.WAITING, info
        [req] = await self.app.approvals.list(queue="payments")
        return str(req.id)


@pytest.fixture
async def env(store_url: str) -> AsyncIterator[Env]:
    app = keel.App(store_url, settings=Settings(poll_interval=0.02))
    calls: list[Any] = []

    @app.tool(irreversible=True, approval=Approval(queue="payments", reason="moves money"))
    async def refund(order: str, amount: Annotated[int, Field(gt=0)]) -> str:
        calls.append((order, amount))
        return f"refunded {amount} on {order}"

    @app.workflow
    async def pay(ctx: keel.Context, order: str, amount: int) -> str:
        try:
            return await ctx.call(refund, order, amount)
        except keel.ApprovalRejected as exc:
            return f"sorry: {exc.reason}"  # type: ignore[attr-defined]

    @app.tool(retry=keel.Retry(attempts=1), fallback=keel.Fallback.human(queue="accounts"))
    async def lookup_account(account_id: str) -> Account:
        raise RuntimeError("503 from the accounts service")

    @app.workflow
    async def lookup(ctx: keel.Context, account_id: str) -> str:
        account = await ctx.call(lookup_account, account_id)
        return f"{account.id}:{account.tier}"

    @app.workflow(state=Tally)
    async def tally(ctx: keel.Context) -> dict[str, Any]:
        async with ctx.phase("count", check=adds_up, on_fail="escalate", queue="accounts"):
            ctx.state.figures, ctx.state.total = [1, 2], 4
        return ctx.state.model_dump()

    api = create_app(app, failure_limit=10, failure_window=60.0)
    transport = httpx.ASGITransport(app=api, client=("10.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as client:
        e = Env(app, client, calls)
        e.wf = {"pay": pay, "lookup": lookup, "tally": tally}
        for name, role, groups in [
            ("vera", "viewer", []),
            ("rita", "reviewer", ["payments", "accounts"]),
            ("otto", "reviewer", ["support"]),
            ("ada", "admin", []),
        ]:
            e.tokens[name] = await add_user(app.store, name, role, groups)
        yield e
    await app.close()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x-1", path)


async def test_every_route_refuses_an_anonymous_request(env: Env) -> None:
    api = create_app(env.app)
    # The JSON API's routes; the console's web pages (login, static files) are tested elsewhere.
    routes = [e for e in endpoints(api) if e.path.startswith("/api/v1")]
    assert {e.path for e in routes} >= {
        "/api/v1/openapi.json",
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/trace",
        "/api/v1/approvals",
        "/api/v1/approvals/{review_id}/approve",
        "/api/v1/approvals/{review_id}/reject",
        "/api/v1/approvals/{review_id}/edit",
        "/api/v1/escalations/{escalation_id}/resolve",
        "/api/v1/escalations/{escalation_id}/reject",
        "/api/v1/reviews",
        "/api/v1/reviews/{review_id}/verdict",
        "/api/v1/users",
        "/api/v1/users/{name}",
        "/api/v1/users/{name}/token",
    }
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as client:
        checked = 0
        for route in routes:
            for headers in ({}, {"Authorization": "Bearer keel_0123456789abcdef_nope"}):
                resp = await client.request(route.method, _concrete(route.path), headers=headers)
                assert resp.status_code == 401, (route, headers, resp.text)
                checked += 1
                if headers:  # a bad token counts toward the limit: start afresh
                    api = create_app(env.app)
                    client._transport = httpx.ASGITransport(app=api)
        assert checked >= 2 * 20
        # Framework defaults are off: no docs or spec anywhere but /api/v1/openapi.json, and
        # anonymous requests are refused even where nothing is served (no route probing).
        for path in ("/openapi.json", "/docs", "/redoc", "/api/v1/docs"):
            anon = await client.get(path)
            assert anon.status_code in (303, 401), (path, anon.status_code)
            assert anon.status_code == 401 or anon.headers["location"].startswith("/login")
        assert (await env.get("/docs", "vera")).status_code == 404


async def test_every_route_is_built_with_an_access_check(env: Env) -> None:
    """Routers carry their check as a router-level dependency: no route can miss it."""
    found = endpoints(create_app(env.app))
    assert len(found) >= 40
    unguarded = {(e.method, e.path) for e in found if not e.guarded}
    assert unguarded == PUBLIC  # the sign-in form, and nothing else


async def test_writes_need_a_reviewer_and_users_an_admin_on_every_route(env: Env) -> None:
    """The role follows the method on every route: a viewer may read, never write."""
    for e in endpoints(create_app(env.app)):
        if not e.path.startswith("/api/v1"):
            continue
        path = _concrete(e.path).replace("x-1", "nope")
        if e.path.endswith("/memory/{namespace}/search"):
            path += "?q=tea"  # its one required parameter
        resp = await env.client.request(e.method, path, headers=env.auth("vera"))
        if e.path.startswith("/api/v1/users"):
            assert resp.status_code == 403, (e, resp.text)
        elif e.method != "GET":
            assert resp.status_code == 403 and "needs reviewer" in resp.text, (e, resp.text)
        else:
            assert resp.status_code in (200, 404), (e, resp.text)


async def test_openapi_spec_needs_a_token(env: Env) -> None:
    resp = await env.get("/openapi.json", "vera")
    assert resp.status_code == 200
    assert "/api/v1/approvals/{review_id}/approve" in resp.json()["paths"]
    assert (await env.client.get("/api/v1/openapi.json")).status_code == 401


async def test_approve_resumes_the_waiting_run(env: Env) -> None:
    env_id = await env.waiting_approval("r1")
    listing = (await env.get("/approvals", "vera")).json()
    assert listing["count"] == 1 and listing["queues"]["payments"][0]["id"] == env_id
    got = await env.get(f"/approvals/{env_id}", "rita")
    assert got.status_code == 200, got.text
    detail = got.json()
    assert detail["tool"] == "refund" and detail["args"] == {"order": "o-1", "amount": 40}
    assert detail["can_decide"] is True
    assert (await env.get(f"/approvals/{env_id}", "vera")).json()["can_decide"] is False

    resp = await env.post(f"/approvals/{env_id}/approve", "rita", {"note": "invoice ok"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "approved" and resp.json()["decided_by"] == "rita"
    assert await env.app.handle("r1").result(SETTLE) == "refunded 40 on o-1"
    assert env.calls == [("o-1", 40)]

    run = (await env.get("/runs/r1", "vera")).json()
    assert run["run"]["status"] == "SUCCEEDED"
    assert [s["key"] for s in run["journal"]][-1] == "refund#0"
    assert [r["id"] for r in (await env.get("/runs?status=succeeded", "vera")).json()] == ["r1"]
    assert (await env.get("/runs?workflow=lookup", "vera")).json() == []
    trace = (await env.get("/runs/r1/trace", "vera")).json()
    assert trace["run_id"] == "r1" and isinstance(trace["spans"], list)

    # A second decision is refused with the reason, and nothing changes.
    again = await env.post(f"/approvals/{env_id}/reject", "ada", {"reason": "too late"})
    assert again.status_code == 409
    assert "already approved" in again.json()["detail"]
    assert env.calls == [("o-1", 40)]


async def test_reject_needs_a_reason_and_resumes_the_run(env: Env) -> None:
    rid = await env.waiting_approval("r2")
    assert (await env.post(f"/approvals/{rid}/reject", "rita", {})).status_code == 422
    blank = await env.post(f"/approvals/{rid}/reject", "rita", {"reason": "  "})
    assert blank.status_code == 422 and "reason" in blank.json()["detail"]
    assert (await env.app.approvals.get(rid)).status == "pending"
    resp = await env.post(f"/approvals/{rid}/reject", "rita", {"reason": "duplicate order"})
    assert resp.status_code == 200 and resp.json()["status"] == "rejected"
    assert await env.app.handle("r2").result(SETTLE) == "sorry: duplicate order"
    assert env.calls == []


async def test_every_decision_route_says_whether_a_worker_will_resume_the_run(env: Env) -> None:
    decided = []
    for run_id, action, body in [
        ("n1", "approve", {}),
        ("n2", "reject", {"reason": "no"}),
        ("n3", "edit", {"args": {"order": "o-1", "amount": 5}}),
    ]:
        rid = await env.waiting_approval(run_id)
        decided.append(await env.post(f"/approvals/{rid}/{action}", "rita", body))
    for run_id, action, body in [
        ("n4", "resolve", {"result": {"id": "a-1", "tier": "pro"}}),
        ("n5", "reject", {"reason": "no"}),
    ]:
        await env.app.start(env.wf["lookup"], {"account_id": "a-1"}, id=run_id)
        assert (await env.app.handle(run_id).settle(SETTLE)).status is keel.RunStatus.WAITING
        [esc] = [e for e in await env.app.escalations.list("open") if e.run_id == run_id]
        decided.append(await env.post(f"/escalations/{esc.id}/{action}", "rita", body))
    # This process started the runs, so its own worker takes them on.
    said = [(r.status_code, r.json().get("worker_live"), r.json().get("message")) for r in decided]
    assert said == [
        (200, True, "run n1 resumes"),
        (200, True, "run n2 continues with the rejection"),
        (200, True, "run n3 resumes"),
        (200, True, "run n4 resumes"),
        (200, True, "run n5 continues with the failure"),
    ], said


async def test_invalid_edit_is_422_naming_the_field_then_a_valid_edit_runs(env: Env) -> None:
    rid = await env.waiting_approval("r3")
    bad = await env.post(f"/approvals/{rid}/edit", "rita", {"args": {"order": "o-1", "amount": -5}})
    assert bad.status_code == 422, bad.text
    assert bad.json()["fields"] == ["amount"] and "amount" in bad.json()["detail"]
    assert (await env.app.approvals.get(rid)).status == "pending"  # nothing decided
    assert env.calls == []
    ok = await env.post(f"/approvals/{rid}/edit", "rita", {"args": {"order": "o-1", "amount": 25}})
    assert ok.status_code == 200 and ok.json()["status"] == "edited"
    assert await env.app.handle("r3").result(SETTLE) == "refunded 25 on o-1"
    assert env.calls == [("o-1", 25)]


async def test_roles_and_queue_groups(env: Env) -> None:
    rid = await env.waiting_approval("r4")
    viewer = await env.post(f"/approvals/{rid}/approve", "vera")
    assert viewer.status_code == 403 and "viewer" in viewer.json()["detail"]
    outsider = await env.post(f"/approvals/{rid}/approve", "otto")
    assert outsider.status_code == 403 and "payments" in outsider.json()["detail"]
    assert (await env.app.approvals.get(rid)).status == "pending"
    assert (await env.get("/users", "rita")).status_code == 403
    users = (await env.get("/users", "ada")).json()
    assert {u["name"]: u["role"] for u in users}["otto"] == "reviewer"
    assert all("token" not in k for u in users for k in u)
    me = (await env.get("/me", "otto")).json()
    assert me == {"name": "otto", "role": "reviewer", "groups": ["support"]}
    # admins decide any queue
    assert (await env.post(f"/approvals/{rid}/approve", "ada")).status_code == 200


async def test_the_apps_reviewer_list_applies_on_top_of_groups(env: Env) -> None:
    rid = await env.waiting_approval("r4b")
    env.app.reviewers["payments"] = {"ada"}  # as App(reviewers={"payments": {"ada"}}) sets
    assert (await env.get(f"/approvals/{rid}", "rita")).json()["can_decide"] is False
    refused = await env.post(f"/approvals/{rid}/approve", "rita")
    assert refused.status_code == 403 and "not a reviewer of queue" in refused.json()["detail"]
    assert (await env.app.approvals.get(rid)).status == "pending"
    assert (await env.get(f"/approvals/{rid}", "ada")).json()["can_decide"] is True
    assert (await env.post(f"/approvals/{rid}/approve", "ada")).status_code == 200


async def test_unknown_ids_are_404(env: Env) -> None:
    for path in ("/runs/nope", "/runs/nope/trace", "/approvals/nope", "/escalations/nope"):
        assert (await env.get(path, "vera")).status_code == 404, path
    assert (await env.post("/approvals/nope/approve", "rita")).status_code == 404
    assert (await env.post("/reviews/nope/verdict", "rita", {"correct": True})).status_code == 404


async def test_escalation_resolve_validates_and_resumes(env: Env) -> None:
    handle = await env.app.start(env.wf["lookup"], {"account_id": "a-9"}, id="e1")
    info = await handle.settle(SETTLE)
    assert info.status is keel.RunStatus.WAITING, info
    [esc] = (await env.get("/escalations", "vera")).json()
    eid = esc["id"]
    assert esc["queue"] == "accounts"
    assert (await env.get(f"/escalations/{eid}", "vera")).json()["id"] == eid
    assert (await env.post(f"/escalations/{eid}/resolve", "otto", {})).status_code == 403
    bad = await env.post(f"/escalations/{eid}/resolve", "rita", {"result": {"id": "a-9"}})
    assert bad.status_code == 422 and "tier" in bad.json()["detail"]
    good = {"result": {"id": "a-9", "tier": "pro"}, "note": "looked it up"}
    resp = await env.post(f"/escalations/{eid}/resolve", "rita", good)
    assert resp.status_code == 200 and resp.json()["status"] == "resolved"
    assert await handle.result(SETTLE) == "a-9:pro"
    twice = await env.post(f"/escalations/{eid}/reject", "rita", {"reason": "no"})
    assert twice.status_code == 409 and "already resolved" in twice.json()["detail"]


async def test_a_phase_resolution_that_would_not_pass_is_refused_with_the_reason(
    env: Env,
) -> None:
    handle = await env.app.start(env.wf["tally"], id="t1")
    assert (await handle.settle(SETTLE)).status is keel.RunStatus.WAITING
    eid = "t1:phase:count#0"
    for edits, problem in [
        ({"drfat": [1, 3]}, "drfat: unknown field (known: figures, total)"),
        ({"total": "four"}, "total: Input should be a valid integer"),
        ({"figures": [1, 2, 2]}, "figures sum to 5, not 4"),
    ]:
        bad = await env.post(f"/escalations/{eid}/resolve", "rita", {"result": edits})
        assert bad.status_code == 422, bad.text
        assert problem in bad.json()["detail"] and problem in bad.json()["problems"][0]
    assert "checkpoint" in bad.json()["detail"]
    assert (await env.get(f"/escalations/{eid}", "vera")).json()["status"] == "open"
    good = await env.post(f"/escalations/{eid}/resolve", "rita", {"result": {"figures": [4]}})
    assert good.status_code == 200
    assert await handle.result(SETTLE) == {"figures": [4], "total": 4}


async def test_failed_logins_are_rate_limited(env: Env) -> None:
    bad = {"Authorization": "Bearer keel_0123456789abcdef_guess"}
    for _ in range(10):
        assert (await env.client.get("/api/v1/runs", headers=bad)).status_code == 401
    blocked = await env.client.get("/api/v1/runs", headers=bad)
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
    # the block covers this address even with a good token; other addresses are unaffected
    assert (await env.get("/runs", "vera")).status_code == 429
    other = httpx.ASGITransport(app=env.client._transport.app, client=("10.0.0.2", 1))  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=other, base_url="http://keel.test") as c2:
        assert (await c2.get("/api/v1/runs", headers=env.auth("vera"))).status_code == 200


async def test_tokens_are_stored_hashed(env: Env, store_url: str) -> None:
    await env.app.close()
    raw = at_rest(store_url)  # every byte the store holds (on SQLite: the file and its WAL)
    assert raw
    for token in env.tokens.values():
        secret = token.split("_", 2)[2]
        assert token.encode() not in raw and secret.encode() not in raw
    rows = await keel.App(store_url).store.list_users()
    assert all(r.token_hash.startswith("sha256$") for r in rows)


# -- the time filter on runs -----------------------------------------------------

T_10H = 1795600800.0  # 2026-11-25T10:00:00Z


async def test_runs_filter_by_since_and_until(env: Env) -> None:
    # runs of a workflow no worker serves, created at known times
    for run_id, at in [("t0", T_10H - 3600), ("t1", T_10H), ("t2", T_10H + 1800)]:
        await env.app.store.create_run(run_id, "archive", b"{}", at)

    async def ids(query: str) -> list[str]:
        resp = await env.get(f"/runs?workflow=archive&{query}", "vera")
        assert resp.status_code == 200, (query, resp.text)
        return [r["id"] for r in resp.json()]

    assert await ids("") == ["t2", "t1", "t0"]
    assert await ids("since=2026-11-25T10:00") == ["t2", "t1"]  # naive is UTC, inclusive
    assert await ids("since=2026-11-25T10:00Z") == ["t2", "t1"]
    assert await ids("since=2026-11-25T12:00%2B02:00") == ["t2", "t1"]  # +02:00 offset
    assert await ids("until=2026-11-25T10:00") == ["t0"]  # exclusive
    assert await ids(f"until={int(T_10H)}") == ["t0"]  # epoch seconds
    assert await ids(f"since={T_10H - 1}&until={T_10H + 1}") == ["t1"]
    assert await ids("since=2026-11-25") == ["t2", "t1", "t0"]  # a date: midnight UTC
    assert await ids("since=2026-11-26") == []

    for query, name in [
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("since=2026-11-25&until=1e9", "until"),
        ("until=", "until"),
    ]:
        resp = await env.get(f"/runs?{query}", "vera")
        assert resp.status_code == 422, (query, resp.text)
        body = resp.json()
        assert body["detail"].startswith(f"{name} ") and "ISO 8601" in body["detail"], body
        assert body["fields"] == [name]


# -- user administration -----------------------------------------------------------


async def test_admin_creates_a_user_whose_token_works(env: Env) -> None:
    resp = await env.post(
        "/users", "ada", {"name": "nina", "role": "reviewer", "groups": ["payments", " "]}
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert {k: body[k] for k in ("name", "role", "groups")} == {
        "name": "nina",
        "role": "reviewer",
        "groups": ["payments"],
    }
    env.tokens["nina"] = body["token"]
    assert body["token"].startswith("keel_")
    me = await env.get("/me", "nina")
    assert me.json() == {"name": "nina", "role": "reviewer", "groups": ["payments"]}
    listed = (await env.get("/users", "ada")).json()
    assert "nina" in {u["name"] for u in listed}
    assert all("token" not in k for u in listed for k in u)  # shown once, never listed
    stored = await env.app.store.get_user("nina")
    assert stored is not None and body["token"] not in stored.token_hash

    viewer = await env.post("/users", "ada", {"name": "vic", "role": "viewer"})
    assert viewer.status_code == 201 and viewer.json()["groups"] == []


async def test_user_admin_needs_the_admin_role(env: Env) -> None:
    for who in ("vera", "rita"):
        made = await env.post("/users", who, {"name": "mallory", "role": "admin"})
        assert made.status_code == 403 and "needs admin" in made.json()["detail"]
        assert (await env.delete("/users/otto", who)).status_code == 403
        assert (await env.post("/users/otto/token", who)).status_code == 403
    assert await env.app.store.get_user("mallory") is None
    assert (await env.get("/me", "otto")).status_code == 200  # untouched


async def test_user_creation_is_validated(env: Env) -> None:
    bad = await env.post("/users", "ada", {"name": "nina", "role": "owner"})
    assert bad.status_code == 422
    assert bad.json()["detail"] == "unknown role 'owner'; use one of viewer, reviewer, admin"
    assert (await env.post("/users", "ada", {"role": "viewer"})).status_code == 422  # no name
    assert (await env.post("/users", "ada", {"name": "", "role": "viewer"})).status_code == 422
    blank = await env.post("/users", "ada", {"name": "  ", "role": "viewer"})
    assert blank.status_code == 422 and "name" in blank.json()["detail"]
    groups = await env.post("/users", "ada", {"name": "nina", "role": "viewer", "groups": "x"})
    assert groups.status_code == 422
    assert await env.app.store.get_user("nina") is None

    dup = await env.post("/users", "ada", {"name": "rita", "role": "viewer"})
    assert dup.status_code == 409 and "already exists" in dup.json()["detail"]
    assert (await env.get("/me", "rita")).json()["role"] == "reviewer"  # unchanged


async def test_removing_a_user_ends_their_token_and_sessions(env: Env) -> None:
    store = env.app.store
    now = time.time()
    await store.create_session(
        ConsoleSession(
            id_hash="h-otto",
            user="otto",
            csrf="c",
            client="10.0.0.1",
            created_at=now,
            expires_at=now + 3600,
        )
    )
    assert await store.get_session("h-otto", now) is not None
    resp = await env.delete("/users/otto", "ada")
    assert resp.status_code == 204 and resp.content == b""
    assert (await env.get("/me", "otto")).status_code == 401
    assert await store.get_session("h-otto", now) is None
    assert await store.get_user("otto") is None
    assert [a.action for a in await store.audit_log("otto")] == ["user_added", "user_removed"]
    gone = await env.delete("/users/otto", "ada")
    assert gone.status_code == 404 and "otto" in gone.json()["detail"]
    assert (await env.delete("/users/nobody", "ada")).status_code == 404


async def test_rotating_a_token_refuses_the_old_one(env: Env) -> None:
    old = env.tokens["rita"]
    resp = await env.post("/users/rita/token", "ada")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["name"] == "rita" and body["role"] == "reviewer"
    assert body["groups"] == ["payments", "accounts"]
    assert body["token"] != old and body["token"].startswith("keel_")
    assert (await env.get("/me", "rita")).status_code == 401  # the old token
    env.tokens["rita"] = body["token"]
    assert (await env.get("/me", "rita")).json()["name"] == "rita"
    assert (await env.post("/users/nobody/token", "ada")).status_code == 404
    # an admin may rotate their own token: the response carries the new one
    mine = await env.post("/users/ada/token", "ada")
    assert mine.status_code == 200
    assert (await env.get("/users", "ada")).status_code == 401
    env.tokens["ada"] = mine.json()["token"]
    assert (await env.get("/users", "ada")).status_code == 200


# -- query parameters --------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field", "says"),
    [
        ("/approvals?status=bogus", "status", "Input should be 'pending', 'approved', 'edited'"),
        ("/approvals?kind=sample", "kind", "'approval', 'low_confidence' or 'novelty'"),
        ("/approvals?limit=0", "limit", "greater than or equal to 1"),
        ("/approvals?limit=5000", "limit", "less than or equal to 1000"),
        ("/approvals?limit=ten", "limit", "a valid integer"),
        ("/approvals?queue=", "queue", "at least 1 character"),
        ("/runs?status=bogus", "status", "'pending', 'running', 'waiting', 'succeeded'"),
        ("/runs?limit=-3", "limit", "greater than or equal to 1"),
        ("/runs?workflow=" + "w" * 201, "workflow", "at most 200 characters"),
        ("/runs?since=soon", "since", "ISO 8601"),
        ("/escalations?status=closed", "status", "'open', 'resolved', 'rejected' or 'all'"),
        ("/escalations?limit=1001", "limit", "less than or equal to 1000"),
        ("/reviews?status=maybe", "status", "'pending', 'correct', 'incorrect' or 'all'"),
        ("/reviews?limit=0", "limit", "greater than or equal to 1"),
        ("/runs?stauts=failed", "stauts", "unknown query parameter; this route takes limit,"),
        ("/me?verbose=1", "verbose", "unknown query parameter; this route takes none"),
    ],
)
async def test_bad_query_parameters_are_422_naming_the_parameter_and_what_it_takes(
    env: Env, query: str, field: str, says: str
) -> None:
    resp = await env.get(query, "vera")
    assert resp.status_code == 422, (query, resp.text)
    body = resp.json()
    assert field in body["fields"] and says in body["detail"], body
    assert any(p.startswith(f"{field}: ") for p in body["problems"]), body


async def test_good_query_parameters_still_work(env: Env) -> None:
    for query in ("/runs?status=SUCCEEDED", "/runs?status=waiting&limit=1000&workflow=pay",
                  "/approvals?status=all&kind=approval&limit=1&queue=payments",
                  "/escalations?status=all", "/reviews?status=incorrect&workflow=pay"):
        assert (await env.get(query, "vera")).status_code == 200, query


async def test_every_route_refuses_a_query_parameter_it_does_not_take(env: Env) -> None:
    """API routes answer 422 naming it; console pages a 422 page (nothing is listed)."""
    page = await (c := env.client).get("/login?bogus=1")
    assert page.status_code == 422 and "bogus" in page.text
    checked = 0
    for e in endpoints(env.client._transport.app):  # type: ignore[attr-defined]
        if not e.path.startswith("/api/v1"):
            continue
        path = _concrete(e.path).replace("x-1", "nope") + "?bogus=1"
        resp = await c.request(e.method, path, headers=env.auth("ada"), json={})
        assert resp.status_code == 422, (e, resp.text)
        assert resp.json()["fields"] == ["bogus"], (e, resp.text)
        checked += 1
    assert checked >= 20


def test_the_run_status_parameter_lists_every_run_status() -> None:
    from typing import get_args

    from keel.server.api.base import RunStatusName

    literal = get_args(RunStatusName)[0]
    assert set(get_args(literal)) == {s.value.lower() for s in keel.RunStatus}
