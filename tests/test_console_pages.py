"""The review console's web pages over HTTP (no browser): sign-in and sessions, CSRF,
every page refusing anonymous requests, decisions through forms resuming real runs,
field errors, escaped rendering, read-only views and double decisions."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
import pytest
from pydantic import BaseModel, Field

import keel
from keel.engine.runtime import Settings
from keel.hitl import Approval
from keel.llm import Gateway, Reply, ScriptedModel
from keel.server.access import endpoints
from keel.server.app import create_app
from keel.server.auth import add_user
from keel.server.web import PUBLIC
from tests.backends import at_rest
from tests.limits import WAIT
from tests.services.pages import csrf_of, element, sign_in

SETTLE = WAIT  # a bound, never a timing (tests/limits.py)
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


class Account(BaseModel):
    id: str
    tier: str


class Label(BaseModel):
    category: Literal["billing", "outage", "general"]
    priority: int




class Tally(BaseModel):
    figures: list[int] = []
    total: int = 0


def adds_up(s: Tally) -> str | None:
    return None if sum(s.figures) == s.total else f"figures sum to {sum(s.figures)}, not {s.total}"


def page_url(review_id: str, kind: str = "approvals") -> str:
    return f"/{kind}/{quote(review_id, safe='')}"


class Console:
    def __init__(self, app: keel.App, server: Any) -> None:
        self.app, self.server = app, server
        self.tokens: dict[str, str] = {}
        self.wf: dict[str, Any] = {}
        self._clients: list[httpx.AsyncClient] = []

    def client(self, ip: str = "10.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.server, client=(ip, 5000))
        c = httpx.AsyncClient(transport=transport, base_url="http://keel.test")
        self._clients.append(c)
        return c

    async def login(self, user: str) -> httpx.AsyncClient:
        c = self.client()
        await sign_in(c, self.tokens[user])
        return c

    async def waiting(self, workflow: str, args: dict[str, Any], run_id: str) -> str:
        handle = await self.app.start(self.wf[workflow], args, id=run_id)
        info = await handle.settle(SETTLE)
        assert info.status is keel.RunStatus.WAITING, info
        reqs = [r for r in await self.app.approvals.list(status="all") if r.run_id == run_id]
        if reqs:
            return str(reqs[0].id)
        [esc] = [e for e in await self.app.escalations.list("open") if e.run_id == run_id]
        return str(esc.id)

    async def close(self) -> None:
        for c in self._clients:
            await c.aclose()


async def _completed(app: keel.App, run_id: str) -> keel.RunInfo:
    await app.handle(run_id).result(SETTLE)
    return await app.get_run(run_id)


async def post(c: httpx.AsyncClient, path: str, data: dict[str, str]) -> httpx.Response:
    """Submit a form with the session's CSRF token (every page's forms carry the same one)."""
    page = await c.get("/inbox")
    return await c.post(path, data={"csrf": csrf_of(page.text), **data})


@pytest.fixture
async def console(store_url: str) -> AsyncIterator[Console]:
    model = ScriptedModel(
        default=Reply(content=json.dumps({"category": "general", "priority": 3}),
                      logprobs=[-0.4, -1.2, -0.9, -0.5]),
    )
    app = keel.App(
        store_url,
        settings=Settings(poll_interval=0.02),
        llm=Gateway({"m": model}, retry=keel.Retry(attempts=1)),
    )

    @app.tool(irreversible=True, approval=Approval(queue="payments", reason="moves money"))
    async def refund(
        order: str, amount: Annotated[int, Field(gt=0, le=500)], express: bool = False
    ) -> str:
        return f"refunded {amount} on {order}{' (express)' if express else ''}"

    @app.workflow
    async def pay(ctx: keel.Context, order: str, amount: int) -> str:
        try:
            return await ctx.call(refund, order, amount)
        except keel.ApprovalRejected as exc:
            return f"sorry: {exc.reason}"  # type: ignore[attr-defined]

    @app.tool(retry=keel.Retry(attempts=1), fallback=keel.Fallback.human(queue="accounts"))
    async def lookup_account(account_id: str) -> Account:
        raise RuntimeError("503 from the accounts service") from ConnectionError("reset")

    @app.workflow
    async def lookup(ctx: keel.Context, account_id: str) -> str:
        account = await ctx.call(lookup_account, account_id)
        return f"{account.id}:{account.tier}"

    @app.workflow
    async def classify(ctx: keel.Context, text: str) -> dict[str, Any]:
        label = await ctx.llm.structured(Label, f"Classify: {text}", min_confidence=0.8,
                                         review_queue="payments")
        assert isinstance(label, Label)
        return label.model_dump()

    @app.workflow
    async def announce(ctx: keel.Context, text: str, within: float | None = None) -> str:
        await ctx.approval({"post": text}, queue="payments", context={"draft": text},
                           reason=f"publish {text}", timeout=within)
        return "posted"

    @app.workflow(state=Tally)
    async def tally(ctx: keel.Context) -> dict[str, Any]:
        async with ctx.phase("count", check=adds_up, on_fail="escalate", queue="accounts"):
            ctx.state.figures, ctx.state.total = [1, 2], 4
        return ctx.state.model_dump()

    server = create_app(app, secure_cookies=False, failure_limit=5, failure_window=60.0)
    con = Console(app, server)
    con.wf = {"pay": pay, "lookup": lookup, "classify": classify, "announce": announce,
              "tally": tally}
    for name, role, groups in [
        ("vera", "viewer", []),
        ("rita", "reviewer", ["payments", "accounts"]),
        ("otto", "reviewer", ["support"]),
        ("ada", "admin", []),
    ]:
        con.tokens[name] = await add_user(app.store, name, role, groups)
    yield con
    await con.close()
    await app.close()


# -- every page refuses an anonymous request ---------------------------------------------


async def test_every_page_and_form_refuses_an_anonymous_request(console: Console) -> None:
    routes = endpoints(console.server)
    pages = {r.path for r in routes if not r.path.startswith("/api/")}
    assert pages >= {"/", "/inbox", "/inbox/items", "/decided", "/approvals/{review_id}",
                     "/approvals/{review_id}/approve", "/approvals/{review_id}/reject",
                     "/approvals/{review_id}/correct", "/approvals/{review_id}/live",
                     "/escalations/{escalation_id}", "/escalations/{escalation_id}/resolve",
                     "/escalations/{escalation_id}/reject", "/logout", "/login",
                     "/runs", "/reviews", "/users", "/users/{name}/rotate"}
    rid = await console.waiting("pay", {"order": "o-1", "amount": 40}, "anon")
    checked = 0
    for cookie in (None, "forged-session-value"):
        c = console.client()
        if cookie:
            c.cookies.set("keel_session", cookie)
        for route in routes:
            method = route.method
            if (method, route.path) in PUBLIC or route.path.startswith("/api/"):
                continue  # the API's own test covers /api/v1
            path = re.sub(r"\{[^}]+\}", quote(rid, safe=""), route.path)
            r = await c.request(method, path, data={"csrf": "x"})
            checked += 1
            if method == "GET":
                assert r.status_code == 303, (method, path, r.status_code)
                assert r.headers["location"].startswith("/login?next="), path
                assert "o-1" not in r.text
            else:
                assert r.status_code == 401, (method, path, r.status_code)
    assert checked >= 2 * 13
    [req] = await console.app.approvals.list()
    assert req.status == "pending"  # nothing was decided by any of those posts


async def test_refusals_before_any_route_carry_the_security_headers(console: Console) -> None:
    c = console.client()
    refused = [await c.get("/inbox"), await c.post("/logout", data={"csrf": "x"}),
               await c.get("/api/v1/me"), await c.get("/static/nope.css")]
    assert [r.status_code for r in refused] == [303, 401, 401, 404]
    for r in refused:  # the gate's answers pass through the security headers, too
        assert r.headers["X-Frame-Options"] == "DENY", r.request.url
        assert "script-src 'self'" in r.headers["Content-Security-Policy"], r.request.url


# -- sign-in, sessions and CSRF ------------------------------------------------------------


async def test_sign_in_sets_a_secure_http_only_strict_cookie(store_url: str) -> None:
    app = keel.App(store_url)
    token = await add_user(app.store, "rita", "reviewer", ["payments"])
    transport = httpx.ASGITransport(app=create_app(app))  # secure cookies by default
    async with httpx.AsyncClient(transport=transport, base_url="https://keel.test") as c:
        form = await c.get("/login")
        assert form.status_code == 200 and 'id="login-form"' in form.text
        r = await c.post("/login", data={"csrf": csrf_of(form.text), "token": token})
        assert r.status_code == 303 and r.headers["location"] == "/inbox"
        cookie = next(v for k, v in r.headers.multi_items()
                      if k == "set-cookie" and v.startswith("keel_session="))
        lowered = cookie.lower()
        assert "httponly" in lowered and "secure" in lowered and "samesite=strict" in lowered
        assert "max-age=43200" in lowered  # 12 hours
        raw = cookie.split(";", 1)[0].split("=", 1)[1]
        inbox = await c.get("/inbox")
        assert inbox.status_code == 200 and "rita (reviewer)" in inbox.text
        assert "Content-Security-Policy" in inbox.headers
        assert "script-src 'self'" in inbox.headers["Content-Security-Policy"]
        assert inbox.headers["X-Frame-Options"] == "DENY"
        assert inbox.headers["X-Content-Type-Options"] == "nosniff"
        assert inbox.headers["Cache-Control"] == "no-store"
    # the session lives in the store: another server process (or a restart) honours it
    other = httpx.ASGITransport(app=create_app(app))
    async with httpx.AsyncClient(transport=other, base_url="https://keel.test") as c2:
        c2.cookies.set("keel_session", raw)
        assert "rita (reviewer)" in (await c2.get("/inbox")).text
    # only the cookie's hash is stored: the raw value is nowhere in what the store holds
    assert raw.encode() not in at_rest(store_url)
    await app.close()


async def test_a_wrong_token_is_refused_and_repeated_failures_are_rate_limited(
    console: Console,
) -> None:
    c = console.client(ip="10.9.9.9")
    for _ in range(5):
        form = await c.get("/login")
        r = await c.post("/login", data={"csrf": csrf_of(form.text), "token": "keel_nope"})
        assert r.status_code == 401 and 'id="login-error"' in r.text
        assert "keel_session" not in r.headers.get("set-cookie", "")
    form = await c.get("/login")
    r = await c.post("/login", data={"csrf": csrf_of(form.text), "token": console.tokens["rita"]})
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    assert int(r.headers["Retry-After"]) > 0
    # another address is not affected
    assert (await console.login("rita")).cookies.get("keel_session")


async def test_the_login_form_needs_its_own_csrf_token(console: Console) -> None:
    c = console.client()
    await c.get("/login")
    r = await c.post("/login", data={"csrf": "guessed", "token": console.tokens["rita"]})
    assert r.status_code == 403 and "keel_session" not in r.headers.get("set-cookie", "")


async def test_a_second_sign_in_form_does_not_void_the_first(console: Console) -> None:
    """Another tab, or a stray anonymous request sent to the form (/favicon.ico), keeps
    the browser's sign-in token, so the form already on screen still works."""
    c = console.client()
    first = await c.get("/login")
    assert (await c.get("/favicon.ico")).headers["location"].startswith("/login")
    await c.get("/login", params={"next": "/favicon.ico"})
    r = await c.post("/login", data={"csrf": csrf_of(first.text), "token": console.tokens["rita"]})
    assert r.status_code == 303 and c.cookies.get("keel_session")


async def test_sign_in_only_redirects_to_this_site(console: Console) -> None:
    for target, expected in [("/runs?status=FAILED", "/runs?status=FAILED"),
                             ("//evil.example/x", "/inbox"),
                             ("https://evil.example/", "/inbox"),
                             ("/\\evil.example", "/inbox")]:
        c = console.client()
        form = await c.get("/login", params={"next": target})
        r = await c.post("/login", data={"csrf": csrf_of(form.text),
                                         "token": console.tokens["vera"], "next": target})
        assert r.headers["location"] == expected, target


async def test_sign_out_ends_the_session_on_the_server(console: Console) -> None:
    c = await console.login("rita")
    stolen = c.cookies.get("keel_session")
    r = await post(c, "/logout", {})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    replay = console.client()
    replay.cookies.set("keel_session", stolen or "")
    assert (await replay.get("/inbox")).status_code == 303


async def test_removing_a_user_ends_their_sessions(console: Console) -> None:
    c = await console.login("otto")
    assert (await c.get("/inbox")).status_code == 200
    await console.app.store.remove_user("otto")
    assert (await c.get("/inbox")).status_code == 303


async def test_forms_without_the_right_csrf_token_change_nothing(console: Console) -> None:
    rid = await console.waiting("pay", {"order": "o-1", "amount": 40}, "csrf")
    rita, ada = await console.login("rita"), await console.login("ada")
    url = page_url(rid)
    other = csrf_of((await ada.get(url)).text)  # a valid token, but of another session
    for data, headers in [
        ({}, {}),
        ({"csrf": "forged"}, {}),
        ({"csrf": other}, {}),
        ({"csrf": csrf_of((await rita.get(url)).text)}, {"Origin": "https://evil.example"}),
    ]:
        r = await rita.post(url + "/approve", data={**data, "arg.order": "o-1",
                                                    "arg.amount": "40"}, headers=headers)
        assert r.status_code == 403 and "CSRF check failed" in r.text
    assert (await console.app.approvals.get(rid)).status == "pending"


async def test_x_forwarded_host_counts_for_the_origin_check_only_behind_a_proxy(
    console: Console,
) -> None:
    rid = await console.waiting("pay", {"order": "o-1", "amount": 40}, "xfh")
    proxied = Console(console.app, create_app(console.app, secure_cookies=False,
                                              forwarded_allow_ips="10.0.0.1"))
    proxied.tokens = console.tokens
    for con, allowed in ((console, False), (proxied, True)):
        c = await con.login("rita")
        page = await c.get(page_url(rid))
        r = await c.post(page_url(rid) + "/reject", data={"csrf": csrf_of(page.text),
                                                         "reason": "no"},
                         headers={"Origin": "https://console.example",
                                  "X-Forwarded-Host": "console.example"})
        assert (r.status_code == 303) is allowed, (allowed, r.status_code)
        assert allowed or "CSRF check failed" in r.text
        await con.close()
    assert (await console.app.approvals.get(rid)).status == "rejected"


# -- the inbox ------------------------------------------------------------------------------


async def test_the_inbox_groups_pending_requests_by_queue_with_age_and_deadline(
    console: Console,
) -> None:
    r1 = await console.waiting("pay", {"order": "o-1", "amount": 40}, "in-1")
    esc = await console.waiting("lookup", {"account_id": "a-9"}, "in-2")
    c = await console.login("rita")
    page = (await c.get("/inbox")).text
    assert 'data-queue="payments"' in page and 'data-queue="accounts"' in page
    assert f'data-id="{r1}"' in page and f'data-id="{esc}"' in page
    assert "moves money" in page and "503 from the accounts service" in page
    assert "no deadline" in page and "ago" in page
    assert f'href="{page_url(r1)}"' in page
    # each row shows what it proposes: the call with its arguments
    assert proposals(page) == {r1: 'refund(order="o-1", amount=40)',
                               esc: 'lookup_account(account_id="a-9")'}
    fragment = await c.get("/inbox/items")
    assert fragment.headers["X-Keel-Count"] == "2" and "<html" not in fragment.text
    assert proposals(fragment.text) == proposals(page)
    assert (await c.get("/", follow_redirects=False)).headers["location"] == "/inbox"


def proposals(page: str) -> dict[str, str]:
    """Inbox row id -> the text of its `code.proposal`, unescaped."""
    rows = re.findall(r'<li class="item [^"]*" data-id="([^"]+)">(.*?)</li>', page, re.S)
    out = {}
    for rid, row in rows:
        found = re.search(r'<code class="proposal"[^>]*>(.*?)</code>', row, re.S)
        if found:
            out[html.unescape(rid)] = html.unescape(found.group(1))
    return out


async def test_inbox_rows_show_proposed_arguments_short_and_escaped(console: Console) -> None:
    long = await console.waiting("pay", {"order": "o-" + "9" * 300, "amount": 40}, "in-long")
    bad = await console.waiting("pay", {"order": XSS, "amount": 7}, "in-xss")
    other = await console.waiting("announce", {"text": "launch day"}, "in-action")
    page = (await (await console.login("rita")).get("/inbox")).text
    shown = proposals(page)
    assert shown[long].startswith('refund(order="o-999') and shown[long].endswith("…")
    assert len(shown[long]) == 120
    assert shown[bad] == f"refund(order={json.dumps(XSS)}, amount=7)"
    assert "<script>" not in page and "<img" not in page  # rendered as text
    assert shown[other] == 'action: {"post": "launch day"}'


async def test_the_inbox_puts_decidable_queues_and_near_deadlines_first(
    console: Console,
) -> None:
    await console.waiting("lookup", {"account_id": "a-1"}, "q-accounts")  # queue accounts
    old = await console.waiting("announce", {"text": "old, no deadline"}, "q-old")
    soon = await console.waiting("announce", {"text": "soon", "within": 3600.0}, "q-soon")
    console.tokens["acc"] = await add_user(console.app.store, "acc", "reviewer", ["accounts"])
    page = (await (await console.login("acc")).get("/inbox")).text
    assert page.index('data-queue="accounts"') < page.index('data-queue="payments"')
    payments = page[page.index('data-queue="payments"') :]
    assert payments.index(f'data-id="{soon}"') < payments.index(f'data-id="{old}"')
    assert "in 1 h" in payments or "in 60 min" in payments


async def test_the_inbox_fragment_shows_new_requests(console: Console) -> None:
    c = await console.login("vera")
    assert 'id="inbox-empty"' in (await c.get("/inbox/items")).text
    rid = await console.waiting("pay", {"order": "o-2", "amount": 10}, "live")
    fresh = await c.get("/inbox/items")
    assert f'data-id="{rid}"' in fresh.text and fresh.headers["X-Keel-Count"] == "1"


# -- deciding approvals -----------------------------------------------------------------------


async def test_the_decision_page_shows_why_then_action_then_request_then_context(
    console: Console,
) -> None:
    rid = await console.waiting("pay", {"order": "o-1", "amount": 40}, "order")
    html = (await (await console.login("rita")).get(page_url(rid))).text
    positions = [html.index(f'<section id="{s}"') for s in ("why", "action", "incoming",
                                                            "context")]
    assert positions == sorted(positions)
    assert 'id="arg-order"' in html and 'value="o-1"' in html
    assert re.search(r'type="number" id="arg-amount" name="arg.amount" value="40"', html)
    assert re.search(r'type="checkbox" id="arg-express"', html)
    assert 'id="approve"' in html and 'id="reject-form"' in html and 'id="shortcuts"' in html
    assert element(html, "queue-live") == "1"  # pending in its queue, this one included


async def test_an_invalid_edit_shows_the_error_by_the_field_and_keeps_what_was_typed(
    console: Console,
) -> None:
    rid = await console.waiting("pay", {"order": "o-1", "amount": 40}, "bad-edit")
    c = await console.login("rita")
    r = await post(c, page_url(rid) + "/approve",
                   {"arg.order": "o-1-edited", "arg.amount": "9999", "note": "typed"})
    assert r.status_code == 422
    assert "500" in element(r.text, "err-arg-amount")
    assert 'value="o-1-edited"' in r.text and 'value="9999"' in r.text and ">typed<" in r.text
    r = await post(c, page_url(rid) + "/approve", {"arg.order": "o-1", "arg.amount": "many"})
    assert r.status_code == 422 and element(r.text, "err-arg-amount") == "enter a whole number"
    assert (await console.app.approvals.get(rid)).status == "pending"
    assert (await console.app.get_run("bad-edit")).status is keel.RunStatus.WAITING


async def test_edit_then_approve_resumes_the_run_with_the_edited_arguments(
    console: Console,
) -> None:
    rid = await console.waiting("pay", {"order": "o-1", "amount": 40}, "edit")
    c = await console.login("rita")
    r = await post(c, page_url(rid) + "/approve",
                   {"arg.order": "o-1", "arg.amount": "25", "arg.express": "true",
                    "note": "partial"})
    assert r.status_code == 303 and r.headers["location"] == page_url(rid)
    done = await console.app.approvals.get(rid)
    assert done.status == "edited" and done.decided_by == "rita"
    assert done.decision and done.decision["original"]["amount"] == 40
    page = (await c.get(page_url(rid))).text
    assert 'id="decided"' in page and "edited" in page and ">rita<" in page
    assert 'id="approve"' not in page and 'id="reject-form"' not in page
    assert 'class="changed"' in page  # the diff marks the edited arguments
    final = await _completed(console.app, "edit")
    assert final.result == "refunded 25 on o-1 (express)"


async def test_approving_unchanged_fields_is_a_plain_approval(console: Console) -> None:
    rid = await console.waiting("pay", {"order": "o-1", "amount": 40}, "plain")
    c = await console.login("ada")
    r = await post(c, page_url(rid) + "/approve", {"arg.order": "o-1", "arg.amount": "40"})
    assert r.status_code == 303
    assert (await console.app.approvals.get(rid)).status == "approved"
    assert (await _completed(console.app, "plain")).result == "refunded 40 on o-1"


async def test_reject_needs_a_reason_and_records_it(console: Console) -> None:
    rid = await console.waiting("pay", {"order": "o-1", "amount": 40}, "rej")
    c = await console.login("rita")
    r = await post(c, page_url(rid) + "/reject", {"reason": "   "})
    assert r.status_code == 422 and "needs a reason" in element(r.text, "err-reason")
    assert (await console.app.approvals.get(rid)).status == "pending"
    r = await post(c, page_url(rid) + "/reject", {"reason": "duplicate of o-0"})
    assert r.status_code == 303
    assert (await _completed(console.app, "rej")).result == "sorry: duplicate of o-0"
    page = (await c.get(page_url(rid))).text
    assert "rejected" in page and "duplicate of o-0" in page and ">rita<" in page
    decided = (await c.get("/decided")).text
    assert f'data-id="{rid}"' in decided and 'class="decided-by">rita<' in decided


async def test_a_second_decision_is_refused_and_shows_who_decided(console: Console) -> None:
    rid = await console.waiting("pay", {"order": "o-1", "amount": 40}, "twice")
    rita, ada = await console.login("rita"), await console.login("ada")
    stale_csrf = csrf_of((await ada.get(page_url(rid))).text)
    await post(rita, page_url(rid) + "/approve", {"arg.order": "o-1", "arg.amount": "40"})
    r = await ada.post(page_url(rid) + "/reject", data={"csrf": stale_csrf, "reason": "no"})
    assert r.status_code == 409 and 'id="decided"' in r.text and ">rita<" in r.text
    assert (await console.app.approvals.get(rid)).status == "approved"
    live = (await ada.get(page_url(rid) + "/live")).json()
    assert live["status"] == "approved" and live["decided_by"] == "rita"
    assert live["waiting"] == 0


async def test_viewers_and_reviewers_of_other_queues_cannot_decide(console: Console) -> None:
    rid = await console.waiting("pay", {"order": "o-1", "amount": 40}, "ro")
    for user in ("vera", "otto"):
        c = await console.login(user)
        page = (await c.get(page_url(rid))).text
        assert 'id="read-only"' in page
        assert 'id="approve"' not in page and 'id="reject-form"' not in page
        for action, data in [("approve", {"arg.order": "o-1", "arg.amount": "40"}),
                             ("reject", {"reason": "no"})]:
            r = await c.post(page_url(rid) + f"/{action}",
                             data={"csrf": csrf_of(page), **data})
            assert r.status_code == 403, (user, action)
    assert (await console.app.approvals.get(rid)).status == "pending"


async def test_the_apps_reviewer_list_applies_on_top_of_groups(console: Console) -> None:
    rid = await console.waiting("pay", {"order": "o-1", "amount": 40}, "listed")
    console.app.reviewers["payments"] = {"ada"}  # as App(reviewers={"payments": {"ada"}})
    rita = await console.login("rita")  # a reviewer of group payments, not on the list
    page = (await rita.get(page_url(rid))).text
    assert 'id="read-only"' in page and 'id="approve"' not in page
    r = await rita.post(page_url(rid) + "/reject", data={"csrf": csrf_of(page), "reason": "no"})
    assert r.status_code == 403 and "may not decide queue" in r.text
    assert (await console.app.approvals.get(rid)).status == "pending"


async def test_stored_markup_renders_as_text(console: Console) -> None:
    rid = await console.waiting("announce", {"text": XSS}, "xss")
    c = await console.login("rita")
    for path in (page_url(rid), "/inbox", "/inbox/items"):
        html = (await c.get(path)).text
        assert "<script>window.__xss" not in html and "onerror=\"window" not in html, path
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html, path
    # inline scripts would not run anyway: the policy allows only the console's own file
    assert "'unsafe-inline'" not in (await c.get("/inbox")).headers[
        "Content-Security-Policy"].split("script-src", 1)[1].split(";", 1)[0]
    r = await post(c, page_url(rid) + "/approve", {})
    assert r.status_code == 303 and (await _completed(console.app, "xss")).result == "posted"


# -- low confidence and escalations -----------------------------------------------------------


async def test_a_low_confidence_output_is_confirmed_or_corrected(console: Console) -> None:
    rid = await console.waiting("classify", {"text": "hm"}, "low")
    c = await console.login("rita")
    page = (await c.get(page_url(rid))).text
    assert "Confidence" in page and 'id="output"' in page and 'id="correct"' in page
    r = await post(c, page_url(rid) + "/correct", {"output": "{not json"})
    assert r.status_code == 422 and "not valid JSON" in element(r.text, "err-output")
    deep = "[" * 1000 + "]" * 1000  # would exhaust the JSON parser's stack (a 500 before)
    r = await post(c, page_url(rid) + "/correct", {"output": deep})
    assert r.status_code == 422 and "the limit is 100" in element(r.text, "err-output")
    r = await post(c, page_url(rid) + "/correct",
                   {"output": json.dumps({"category": "weather", "priority": 1})})
    assert r.status_code == 422 and "category" in element(r.text, "err-output")
    r = await post(c, page_url(rid) + "/correct",
                   {"output": json.dumps({"category": "billing", "priority": 1})})
    assert r.status_code == 303
    assert (await _completed(console.app, "low")).result == {"category": "billing",
                                                             "priority": 1}


async def test_a_low_confidence_output_can_be_confirmed_as_it_is(console: Console) -> None:
    rid = await console.waiting("classify", {"text": "hm"}, "low-ok")
    c = await console.login("rita")
    r = await post(c, page_url(rid) + "/approve", {"output": "ignored when confirming"})
    assert r.status_code == 303
    assert (await console.app.approvals.get(rid)).status == "confirmed"
    assert (await _completed(console.app, "low-ok")).result == {"category": "general",
                                                                "priority": 3}


async def test_an_escalation_is_rejected_with_a_reason(console: Console) -> None:
    eid = await console.waiting("lookup", {"account_id": "a-9"}, "esc-no")
    c = await console.login("rita")
    url = page_url(eid, "escalations")
    r = await post(c, url + "/reject", {"reason": " "})
    assert r.status_code == 422 and "needs a reason" in element(r.text, "err-reason")
    r = await post(c, url + "/reject", {"reason": "account closed"})
    assert r.status_code == 303
    with pytest.raises(keel.RunFailed) as failed:  # the step fails with the reason
        await console.app.handle("esc-no").result(SETTLE)
    assert failed.value.error is not None and "account closed" in failed.value.error.message
    esc = await console.app.escalations.get(eid)
    assert esc.status == "rejected" and esc.resolved_by == "rita"
    r = await post(c, url + "/reject", {"reason": "again"})
    assert r.status_code == 409 and 'id="decided"' in r.text


async def test_an_escalation_shows_the_error_and_is_resolved_with_a_checked_result(
    console: Console,
) -> None:
    eid = await console.waiting("lookup", {"account_id": "a-9"}, "esc")
    c = await console.login("rita")
    html = (await c.get(page_url(eid, "escalations"))).text
    positions = [html.index(f'<section id="{s}"') for s in ("why", "action", "incoming",
                                                            "context", "errors")]
    assert positions == sorted(positions)
    assert "503 from the accounts service" in element(html, "errors").replace("\n", " ") or (
        "503 from the accounts service" in html)
    errors = html[html.index('<section id="errors"') :]
    assert "caused by <code>ConnectionError</code>: reset" in errors
    url = page_url(eid, "escalations")
    r = await post(c, url + "/resolve", {"result": "{oops"})
    assert r.status_code == 422 and "not valid JSON" in element(r.text, "err-result")
    r = await post(c, url + "/resolve", {"result": "{\"a\": " * 500 + "1" + "}" * 500})
    assert r.status_code == 422 and "the limit is 100" in element(r.text, "err-result")
    r = await post(c, url + "/resolve", {"result": json.dumps({"id": "a-9"})})
    assert r.status_code == 422 and "tier" in element(r.text, "err-result")
    r = await post(c, url + "/resolve", {"result": json.dumps({"id": "a-9", "tier": "gold"})})
    assert r.status_code == 303
    assert (await _completed(console.app, "esc")).result == "a-9:gold"
    assert 'id="decided"' in (await c.get(url)).text


async def test_a_phase_resolution_that_would_not_pass_is_refused_on_its_page(
    console: Console,
) -> None:
    eid = await console.waiting("tally", {}, "tally")
    c = await console.login("rita")
    url = page_url(eid, "escalations")
    for edits, problem in [
        ({"drfat": [1, 3]}, "drfat: unknown field (known: figures, total)"),
        ({"figures": [1, 2, 2]}, "checkpoint of phase 'count': figures sum to 5, not 4"),
    ]:
        r = await post(c, url + "/resolve", {"result": json.dumps(edits)})
        assert r.status_code == 422 and problem in element(r.text, "err-result"), r.text
        assert element(r.text, "result") == json.dumps(edits)  # kept for correcting
    assert (await console.app.escalations.get(eid)).status == "open"
    r = await post(c, url + "/resolve", {"result": json.dumps({"figures": [4]})})
    assert r.status_code == 303
    assert (await _completed(console.app, "tally")).result == {"figures": [4], "total": 4}


async def test_unknown_ids_get_a_404_page(console: Console) -> None:
    c = await console.login("vera")
    for path in ("/approvals/nope", "/escalations/nope"):
        r = await c.get(path)
        assert r.status_code == 404 and 'id="error-message"' in r.text and "<html" in r.text


async def test_decided_lists_the_latest_decisions_first_with_who_and_when(
    console: Console,
) -> None:
    first = await console.waiting("pay", {"order": "o-1", "amount": 40}, "d-1")
    second = await console.waiting("pay", {"order": "o-2", "amount": 30}, "d-2")
    pending = await console.waiting("pay", {"order": "o-3", "amount": 20}, "d-3")
    await console.app.approvals.approve(second, by="rita")  # decided first
    await console.app.approvals.reject(first, "wrong order", by="ada")
    page = (await (await console.login("vera")).get("/decided")).text
    assert page.index(f'data-id="{first}"') < page.index(f'data-id="{second}"')
    assert f'data-id="{pending}"' not in page
    assert 'class="decided-by">ada<' in page and 'class="decided-by">rita<' in page
    assert "status-rejected" in page and "status-approved" in page


# -- users (admins) -------------------------------------------------------------------------


async def test_admins_add_users_whose_token_is_shown_once_and_works(console: Console) -> None:
    ada = await console.login("ada")
    page = await ada.get("/users")
    assert page.status_code == 200 and 'data-user="rita"' in page.text
    assert 'id="nav-users"' in page.text
    r = await post(ada, "/users", {"name": "nina", "role": "reviewer", "groups": "payments, qa"})
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    token = element(r.text, "token-value")
    assert token.startswith("keel_")
    assert token not in (await ada.get("/users")).text  # shown once
    row = await console.app.store.get_user("nina")
    assert row and row.groups == ("payments", "qa") and token not in str(row)
    console.tokens["nina"] = token
    nina = await console.login("nina")
    assert "nina (reviewer)" in (await nina.get("/inbox")).text
    [added] = [a for a in await console.app.store.audit_log("nina") if a.action == "user_added"]
    assert added.actor == "ada"


async def test_adding_a_user_checks_the_form(console: Console) -> None:
    ada = await console.login("ada")
    r = await post(ada, "/users", {"name": "", "role": "reviewer"})
    assert r.status_code == 422 and element(r.text, "err-name") == "a user needs a name"
    r = await post(ada, "/users", {"name": "zed", "role": "owner"})
    assert r.status_code == 422 and "viewer, reviewer, admin" in element(r.text, "err-role")
    assert 'value="zed"' in r.text  # what was typed stays
    r = await post(ada, "/users", {"name": "rita", "role": "viewer"})
    assert r.status_code == 409 and "already exists" in element(r.text, "err-name")
    assert (await console.app.store.get_user("rita")).role == "reviewer"  # type: ignore[union-attr]
    assert await console.app.store.get_user("zed") is None


async def test_rotating_a_token_ends_the_old_one_and_its_sessions(console: Console) -> None:
    ada, rita = await console.login("ada"), await console.login("rita")
    r = await post(ada, "/users/rita/rotate", {})
    assert r.status_code == 200 and element(r.text, "token-value").startswith("keel_")
    [rotated] = [a for a in await console.app.store.audit_log("rita")
                 if a.action == "token_rotated"]
    assert rotated.actor == "ada"
    assert (await rita.get("/inbox")).status_code == 303  # her session ended
    c = console.client()
    form = await c.get("/login")
    old = await c.post("/login", data={"csrf": csrf_of(form.text), "token": console.tokens["rita"]})
    assert old.status_code == 401


async def test_removing_a_user_needs_the_name_typed_and_never_oneself(console: Console) -> None:
    ada = await console.login("ada")
    r = await post(ada, "/users/otto/remove", {"confirm": "ot"})
    assert r.status_code == 422 and "type the name" in r.text
    assert await console.app.store.get_user("otto") is not None
    r = await post(ada, "/users/otto/remove", {"confirm": "otto"})
    assert r.status_code == 303 and await console.app.store.get_user("otto") is None
    [removed] = [a for a in await console.app.store.audit_log("otto")
                 if a.action == "user_removed"]
    assert removed.actor == "ada"
    r = await post(ada, "/users/ada/remove", {"confirm": "ada"})
    assert r.status_code == 409 and await console.app.store.get_user("ada") is not None
    r = await post(ada, "/users/ghost/rotate", {})
    assert r.status_code == 404
    r = await post(ada, "/users/ada/rotate", {})
    assert r.status_code == 200 and "sign in again" in r.text
    assert (await ada.get("/users")).status_code == 303  # her own session ended too


async def test_only_admins_manage_users(console: Console) -> None:
    for name in ("vera", "rita"):
        c = await console.login(name)
        page = await c.get("/users")
        assert page.status_code == 403 and 'id="nav-users"' not in page.text
        csrf = csrf_of((await c.get("/inbox")).text)
        for path, data in [("/users", {"name": "x", "role": "admin"}),
                           ("/users/otto/rotate", {}),
                           ("/users/otto/remove", {"confirm": "otto"})]:
            r = await c.post(path, data={"csrf": csrf, **data})
            assert r.status_code == 403, (name, path)
    assert await console.app.store.get_user("x") is None
    assert await console.app.store.get_user("otto") is not None


async def test_the_openapi_spec_describes_only_the_json_api(console: Console) -> None:
    spec = await console.client().get(
        "/api/v1/openapi.json", headers={"Authorization": f"Bearer {console.tokens['vera']}"}
    )
    paths = spec.json()["paths"]
    assert "/api/v1/approvals/{review_id}/edit" in paths
    assert all(p.startswith("/api/v1/") for p in paths), sorted(paths)


async def test_every_page_refuses_a_query_parameter_it_does_not_take(console: Console) -> None:
    rid = await console.waiting("pay", {"order": "o-1", "amount": 40}, "q")
    c = await console.login("ada")
    checked = 0
    for e in endpoints(console.server):
        if e.method != "GET" or e.path.startswith("/api/"):
            continue
        path = re.sub(r"\{[^}]+\}", quote(rid, safe=""), e.path) + "?bogus=1"
        r = await c.get(path)
        assert r.status_code == 422, (path, r.status_code)
        assert 'id="error-message"' in r.text and "bogus" in r.text, path
        checked += 1
    assert checked >= 10
    # the parameters pages do take still work, and their bad values are shown on the page
    assert (await c.get("/runs?status=FAILED&workflow=pay")).status_code == 200
    bad = await c.get("/runs?status=bogus")
    assert bad.status_code == 422 and "not a run status" in bad.text
