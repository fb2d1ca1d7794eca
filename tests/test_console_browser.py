"""The web review console in a real browser: headless Chromium (Playwright) against a real
`keel serve` and `keel worker` over one SQLite store (tests/services/console_server.py,
workflows in tests/apps/console_app.py).

A reviewer logs in, opens a pending approval, edits an argument to an invalid value and
sees the error, fixes it, approves, and sees the waiting run complete; rejects with a
reason (and not without one); an XSS payload in a model reply renders inert; a viewer sees
no decision buttons and is refused by the endpoint; the inbox updates itself without
disturbing what a reviewer is typing; anonymous requests end on the login page; a
namespace of long-term memory is browsed, searched with a min relevance and a memory
forgotten.

With KEEL_SCREENSHOTS=DIR (`make screenshots`) the tests also save inbox.png,
decision.png, waterfall.png and memory.png there.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.apps.console_app import INPUT_XSS, XSS
from tests.limits import WAIT
from tests.services.browser import chromium, new_context
from tests.services.console_server import Console, console_server

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture reports it: fails in CI, skips locally
    expect = None

pytestmark = pytest.mark.browser

DONE = ("SUCCEEDED",)
USERS = {  # name -> (role, groups)
    "rita": ("reviewer", ["payments", "support", "qa"]),
    "vera": ("viewer", []),
    "ada": ("admin", []),
}
VIEWPORT = {"width": 1280, "height": 900}


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def console(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """One server + worker for the module; each test starts runs of its own."""
    with console_server(tmp_path_factory.mktemp("console")) as c:
        c.tokens = {name: c.add_user(name, role, groups) for name, (role, groups) in USERS.items()}
        yield c


@pytest.fixture(autouse=True)
def server_logs(console: Console) -> Iterator[None]:
    """After each test, print what the server and worker logged during it (pytest shows
    it for a failed test only)."""
    marks = {p.name: len(p.log()) for p in console.procs}
    yield
    for p in console.procs:
        new = p.log()[marks.get(p.name, 0) :]
        print(f"--- {p.name} (pid {p.popen.pid}, alive={p.alive()}) ---\n{new[-6000:]}")


@pytest.fixture
def context(browser: Any, console: Console) -> Iterator[Any]:
    """A fresh browser profile; no test may ever make the page open a dialog."""
    with new_context(browser, console.base_url, viewport=VIEWPORT) as ctx:
        yield ctx
        assert ctx.dialogs == [], f"a page opened a dialog: {ctx.dialogs}"


# -- helpers -------------------------------------------------------------------------


def approval_path(review_id: str) -> str:
    return "/approvals/" + quote(review_id, safe="")


def run_path(run_id: str) -> str:
    return "/runs/" + quote(run_id, safe="")


def login(context: Any, console: Console, user: str, landing: str = "/inbox") -> Any:
    page = context.new_page()
    page.goto("/login")
    page.fill("#token", console.tokens[user])
    page.click("#sign-in")
    page.wait_for_url(re.compile(re.escape(landing) + r"$"))
    return page


def submit(page: Any, selector: str) -> Any:
    """Click a submit button; the response of the page the browser ends on (after any
    303) as Playwright reports it for the navigation."""
    with page.expect_navigation() as nav:
        page.click(selector)
    return nav.value


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


def wait_run_page(page: Any, run_id: str, statuses: tuple[str, ...], timeout: float = WAIT) -> str:
    """Open the run's page and reload it until #run-status shows one of `statuses`."""
    resp = page.goto(run_path(run_id))
    deadline = time.monotonic() + timeout
    while True:
        assert resp is not None and resp.status == 200, f"GET {run_path(run_id)}: {resp.status}"
        shown = text(page, "#run-status").upper()
        if any(s in shown for s in statuses):
            return shown
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id}: #run-status shows {shown!r}, not {'/'.join(statuses)}")
        page.wait_for_timeout(250)
        resp = page.reload()


def shot(page: Any, name: str, element: str | None = None) -> None:
    """With KEEL_SCREENSHOTS=DIR: a full-page PNG (or just `element`) saved as DIR/name."""
    out = os.environ.get("KEEL_SCREENSHOTS")
    if not out:
        return
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    if element is None:
        page.screenshot(path=str(path / name), full_page=True)
    else:
        target = page.locator(element)
        target.scroll_into_view_if_needed()
        target.screenshot(path=str(path / name))


def start_refund(console: Console, run_id: str, amount: int = 40, reason: str = "") -> Any:
    """A refund_order run waiting for approval in "payments": its pending request."""
    console.start(
        "refund_order", {"order": f"o-{run_id}", "amount": amount, "reason": reason}, run_id
    )
    return console.pending(run_id)


# -- tests ---------------------------------------------------------------------------


def test_login_lands_on_the_inbox_and_a_wrong_token_is_refused(
    console: Console, context: Any
) -> None:
    req = start_refund(console, "login-1")
    page = context.new_page()
    page.goto("/login")
    page.fill("#token", "keel_0123456789abcdef_not-a-real-secret")
    resp = submit(page, "#sign-in")
    assert resp.status == 401
    expect(page.locator("#login-error")).to_be_visible()
    assert "keel_session" not in {c["name"] for c in context.cookies()}

    page.fill("#token", console.tokens["rita"])
    submit(page, "#sign-in")
    assert urlsplit(page.url).path == "/inbox"
    expect(page.locator("#whoami")).to_have_text("rita (reviewer)")
    item = page.locator(f'section.queue[data-queue="payments"] li.item[data-id="{req.id}"]')
    expect(item).to_be_visible()
    expect(item.locator("a.open")).to_have_attribute("href", approval_path(req.id))
    for part in (".age", ".deadline", ".reason", ".tool"):
        assert item.locator(part).count() == 1, part
    expect(item.locator(".tool")).to_contain_text("refund")
    [cookie] = [c for c in context.cookies() if c["name"] == "keel_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_edit_to_an_invalid_value_then_fix_and_approve_completes_the_run(
    console: Console, context: Any
) -> None:
    req = start_refund(console, "edit-1", amount=40, reason="double charge")
    page = login(context, console, "rita")
    page.click(f'li.item[data-id="{req.id}"] a.open')
    page.wait_for_url(re.compile(re.escape(approval_path(req.id)) + "$"))

    order = page.evaluate(
        "() => [...document.querySelectorAll('section[id]')].map(s => s.id)"
        ".filter(id => ['why', 'action', 'incoming', 'context'].includes(id))"
    )
    assert order == ["why", "action", "incoming", "context"]
    expect(page.locator("#why")).to_contain_text("refunds move money")
    expect(page.locator("#tool-name")).to_have_text("refund")
    expect(page.locator("#incoming")).to_contain_text("o-edit-1")
    for param in ("order", "amount", "reason"):
        expect(page.locator(f'label[for="arg-{param}"]')).to_have_count(1)
    amount = page.locator("#arg-amount")
    expect(amount).to_have_attribute("type", "number")
    expect(amount).to_have_attribute("name", "arg.amount")
    expect(amount).to_have_value("40")
    expect(page.locator("#arg-order")).to_have_value("o-edit-1")
    expect(page.locator("#arg-reason")).to_have_value("double charge")

    amount.fill("9999")
    page.fill("#arg-reason", "double charge, partial")
    page.fill("#note", "checked the ledger")
    expect(page.locator("#approve")).to_have_text("Approve with edits")
    resp = submit(page, "#approve")
    assert resp.status == 422
    error = page.locator("#err-arg-amount")
    expect(error).to_be_visible()
    expect(error).to_have_class(re.compile(r"\bfield-error\b"))
    expect(error).to_have_attribute("role", "alert")
    assert text(page, "#err-arg-amount"), "the field error says what is wrong"
    expect(page.locator("#arg-amount")).to_have_value("9999")  # typed values kept
    expect(page.locator("#arg-reason")).to_have_value("double charge, partial")
    expect(page.locator("#note")).to_have_value("checked the ledger")
    assert page.locator("#decided").count() == 0
    assert console.review(req.id).status == "pending"
    assert console.run("edit-1").status.value == "WAITING"
    shot(page, "decision.png")

    page.fill("#arg-amount", "25")
    submit(page, "#approve")
    assert unquote(urlsplit(page.url).path) == unquote(approval_path(req.id))
    decided = page.locator("#decided")
    expect(decided).to_contain_text(re.compile(r"(approved|edited).*by rita", re.I | re.S))
    expect(decided).to_contain_text("checked the ledger")
    assert page.locator("#decide-form").count() == 0
    assert page.locator("#reject-form").count() == 0
    done = console.review(req.id)
    assert done.status == "edited" and done.decided_by == "rita"
    assert done.decision["args"]["amount"] == 25

    wait_run_page(page, "edit-1", DONE)
    expect(page.locator("#run-result")).to_contain_text("refunded 25 on o-edit-1")
    assert (
        console.run("edit-1").result["receipt"]
        == "refunded 25 on o-edit-1 (double charge, partial)"
    )


def test_keyboard_reject_needs_a_reason_and_fails_the_run(console: Console, context: Any) -> None:
    req = start_refund(console, "reject-1", amount=300)
    page = login(context, console, "rita")
    page.goto(approval_path(req.id))
    expect(page.locator("#shortcuts")).to_be_attached()

    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.keyboard.press("r")
    expect(page.locator("#reason")).to_be_focused()

    # The browser would refuse an empty required field itself; the server must too.
    page.evaluate("() => document.querySelector('#reason').removeAttribute('required')")
    page.fill("#reason", "")
    resp = submit(page, "#reject")
    assert resp.status == 422
    # `refund` has a parameter named `reason` too: its field error is #err-arg-reason.
    error = page.locator("#err-reason")
    expect(error).to_have_count(1)
    expect(error).to_contain_text(re.compile(r"\S"))
    assert console.review(req.id).status == "pending"

    reason = "already refunded by <b>bank</b> transfer"
    page.fill("#reason", reason)
    with page.expect_navigation():
        page.locator("#reason").press("Control+Enter")
    decided = page.locator("#decided")
    expect(decided).to_contain_text(re.compile(r"rejected.*by rita", re.I | re.S))
    expect(decided).to_contain_text(reason)  # as text: the <b> is not markup
    assert page.locator("#decided b").count() == 0
    assert console.review(req.id).status == "rejected"

    wait_run_page(page, "reject-1", ("FAILED",))
    assert console.run("reject-1").status.value == "FAILED"


NO_INJECTED = """() => ({
    xss: window.__xss,
    injected: document.querySelectorAll('img[src="x"], svg[onload], [onerror], [onload]').length,
    scripts: [...document.scripts].filter(s => !s.src).length,
    text: document.body.textContent,
})"""


def assert_inert(page: Any) -> None:
    page.wait_for_load_state("load")
    got = page.evaluate(NO_INJECTED)
    assert got["xss"] is None, f"a payload ran: window.__xss = {got['xss']!r}"
    assert got["injected"] == 0, "payload markup became elements"
    assert got["scripts"] == 0, "an inline <script> element is on the page"
    assert "<script>window.__xss=1</script>" in got["text"], "the payload shows as text"


def test_xss_payload_in_a_model_reply_renders_inert(console: Console, context: Any) -> None:
    console.start("draft_reply", {"ticket": f"t-9 {INPUT_XSS}"}, "xss-1")
    req = console.pending("xss-1")
    assert XSS in req.request["context"]["draft"]
    page = login(context, console, "rita")
    page.goto(approval_path(req.id))
    assert_inert(page)
    expect(page.locator("#context")).to_contain_text("<script>window.__xss=1</script>")
    expect(page.locator("#incoming")).to_contain_text("<svg onload=")
    expect(page.locator("#arg-body")).to_have_value(re.compile(re.escape(XSS)))
    visible = str(page.locator("body").inner_text())
    assert "<script>" in visible

    submit(page, "#approve")
    expect(page.locator("#decided")).to_contain_text("approved")
    assert_inert(page)
    wait_run_page(page, "xss-1", DONE)
    assert_inert(page)
    expect(page.locator("#run-input")).to_contain_text("<svg onload=")


def test_a_viewer_sees_no_decision_buttons_and_the_endpoint_refuses_them(
    console: Console, browser: Any, context: Any
) -> None:
    req = start_refund(console, "viewer-1")
    page = context.new_page()
    page.goto(approval_path(req.id))  # anonymous: to the login page, then back here
    assert urlsplit(page.url).path == "/login"
    page.fill("#token", console.tokens["vera"])
    submit(page, "#sign-in")
    assert unquote(urlsplit(page.url).path) == unquote(approval_path(req.id))
    expect(page.locator("#whoami")).to_have_text("vera (viewer)")
    expect(page.locator("#read-only")).to_be_visible()
    expect(page.locator("#tool-name")).to_have_text("refund")
    for absent in ("#approve", "#reject", "#reject-form", "#confirm", "#correct"):
        assert page.locator(absent).count() == 0, absent

    csrf = page.locator("#logout-form input[name=csrf]").input_value()
    form = {
        "csrf": csrf,
        "arg.order": "o-viewer-1",
        "arg.amount": "40",
        "arg.reason": "",
        "note": "",
    }
    approve = approval_path(req.id) + "/approve"
    resp = page.request.post(approve, form=form, max_redirects=0)
    assert resp.status == 403, resp.text()
    assert "csrf check failed" not in resp.text().lower(), "refused for the role, not CSRF"
    resp = page.request.post(
        approval_path(req.id) + "/reject", form={"csrf": csrf, "reason": "no"}, max_redirects=0
    )
    assert resp.status == 403
    assert console.review(req.id).status == "pending"
    assert console.run("viewer-1").status.value == "WAITING"

    # The same request from a reviewer's session is accepted: the 403 was the role.
    with new_context(browser, console.base_url) as other:
        rita = login(other, console, "rita")
        rita.goto(approval_path(req.id))
        form["csrf"] = rita.locator("#decide-form input[name=csrf]").input_value()
        resp = rita.request.post(approve, form=form, max_redirects=0)
        assert resp.status in (200, 303), resp.text()
    assert console.review(req.id).status == "approved"
    console.wait_status("viewer-1", *DONE)


def test_approving_the_untouched_form_is_a_plain_approval(console: Console, context: Any) -> None:
    req = start_refund(console, "plain-1", reason="")  # the proposal holds reason=""
    page = login(context, console, "rita")
    page.goto(approval_path(req.id))
    expect(page.locator("#arg-reason")).to_have_value("")
    expect(page.locator("#approve")).to_have_text("Approve")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    with page.expect_navigation():
        page.keyboard.press("a")  # the approve shortcut
    expect(page.locator("#decided")).to_contain_text(re.compile(r"approved by rita", re.I))
    done = console.review(req.id)
    assert done.status == "approved", f"recorded as {done.status}: {done.decision}"
    assert done.decision["args"] == req.args
    console.wait_status("plain-1", *DONE)


def test_inbox_updates_live_without_disturbing_a_reviewer(console: Console, context: Any) -> None:
    page = login(context, console, "rita")
    page.evaluate("() => { window.__sameDocument = true }")
    first = start_refund(console, "live-1")
    console.start("draft_reply", {"ticket": "t-live: my order arrived twice"}, "live-2")
    second = console.pending("live-2")
    # No reload: the item appears by the page's own polling.
    page.wait_for_selector(
        f'section.queue[data-queue="payments"] li.item[data-id="{first.id}"]', timeout=WAIT * 1000
    )
    page.wait_for_selector(
        f'section.queue[data-queue="support"] li.item[data-id="{second.id}"]', timeout=WAIT * 1000
    )
    assert page.evaluate("() => window.__sameDocument") is True
    shot(page, "inbox.png")

    page.goto(approval_path(first.id))
    page.evaluate("() => { window.__sameDocument = true }")
    page.fill("#note", "half-written note")
    page.fill("#arg-order", "o-typed")
    page.locator("#arg-order").focus()
    start_refund(console, "live-3")  # a new approval arrives while the reviewer types
    page.wait_for_timeout(3_000)  # at least one poll cycle (2 s) of any live part
    assert page.evaluate("() => window.__sameDocument") is True
    expect(page.locator("#note")).to_have_value("half-written note")
    expect(page.locator("#arg-order")).to_have_value("o-typed")
    expect(page.locator("#arg-order")).to_be_focused()
    expect(page.locator("#approve")).to_have_text("Approve with edits")
    expect(page.locator("#queue-live")).not_to_have_text("1")  # the queue count is live too

    # Someone else decides it meanwhile: the page says so, keeps the typing, disables buttons.
    status, _ = console.api("POST", f"/approvals/{first.id}/approve", console.tokens["ada"], {})
    assert status == 200
    expect(page.locator("#stale")).to_be_visible(timeout=WAIT * 1000)
    expect(page.locator("#stale")).to_contain_text("approved by ada")
    expect(page.locator("#approve")).to_be_disabled()
    expect(page.locator("#note")).to_have_value("half-written note")
    assert page.evaluate("() => window.__sameDocument") is True


def test_anonymous_requests_end_on_the_login_page(console: Console, context: Any) -> None:
    start_refund(console, "anon-1")
    page = context.new_page()
    for path in ("/inbox", "/runs", "/approvals/x", "/reviews", "/runs/anon-1", "/decided"):
        page.goto(path)
        assert urlsplit(page.url).path == "/login", path
        expect(page.locator("#login-form")).to_be_visible()
        for data in ("#inbox", "table#runs", "#reviews", "#why", "#run-status", "#whoami"):
            assert page.locator(data).count() == 0, (path, data)
        assert "o-anon-1" not in page.content()
        resp = page.request.get(path, max_redirects=0)
        assert resp.status == 303, path
        assert urlsplit(resp.headers["location"]).path == "/login", path
    for path in ("/approvals/x/approve", "/approvals/x/reject"):
        resp = page.request.post(path, form={"reason": "x"}, max_redirects=0)
        assert resp.status in (401, 403), path
    assert "keel_session" not in {c["name"] for c in context.cookies()}


def test_a_completed_run_shows_its_journal_and_waterfall(console: Console, context: Any) -> None:
    req = start_refund(console, "done-1", amount=120)
    status, _ = console.api("POST", f"/approvals/{req.id}/approve", console.tokens["rita"], {})
    assert status == 200
    console.wait_status("done-1", *DONE)
    console.start("ping", {"n": 1}, "ping-1")
    console.wait_status("ping-1", *DONE)

    page = login(context, console, "vera")
    page.goto("/runs")
    row = page.locator('table#runs tr[data-run-id="done-1"]')
    expect(row.locator(".workflow")).to_have_text("refund_order")
    expect(row.locator(".status")).to_contain_text(re.compile("|".join(DONE)))
    for cell in (".created", ".duration", ".cost"):
        assert row.locator(cell).count() == 1, cell
    page.select_option('#filters select[name="status"]', "SUCCEEDED")
    page.fill('#filters input[name="workflow"]', "ping")
    submit(page, "#filter")
    expect(page.locator('table#runs tr[data-run-id="ping-1"]')).to_have_count(1)
    expect(page.locator('table#runs tr[data-run-id="done-1"]')).to_have_count(0)

    page.goto("/runs")
    page.click('table#runs tr[data-run-id="done-1"] a.run')
    page.wait_for_url(re.compile(re.escape(run_path("done-1")) + "$"))
    expect(page.locator("#run-status")).to_contain_text(re.compile("|".join(DONE)))
    expect(page.locator("#run-input")).to_contain_text("o-done-1")
    expect(page.locator("#run-result")).to_contain_text("refunded 120 on o-done-1")
    steps = page.locator("#journal li.step")
    assert steps.count() >= 3
    keys = [steps.nth(i).get_attribute("data-key") for i in range(steps.count())]
    assert all(keys), keys
    journal = text(page, "#journal")
    for name in ("find_order", "refund"):
        assert name in journal, name

    spans = page.locator("#waterfall .span")
    assert spans.count() >= 3
    for i in range(spans.count()):
        style = spans.nth(i).locator(".bar").get_attribute("style") or ""
        assert "width" in style and "left" in style, style
    waterfall = text(page, "#waterfall")
    for name in ("find_order", "refund", "console-model"):
        assert name in waterfall, name
    shot(page, "waterfall.png", "section:has(> #waterfall)")


def test_a_sampled_run_gets_a_verdict(console: Console, context: Any) -> None:
    console.start("label", {"text": "please refund my order"}, "sample-1")
    console.wait_status("sample-1", *DONE)
    review_id = "sample-1:sample"
    assert console.call(console.app.reviews.get(review_id)).status == "pending"

    page = login(context, console, "rita")
    page.goto("/reviews")
    page.click(f'#reviews li.item[data-id="{review_id}"] a.open')
    page.wait_for_url(re.compile(re.escape("/reviews/" + quote(review_id, safe="")) + "$"))
    expect(page.locator("#sample-input")).to_contain_text("please refund my order")
    expect(page.locator("#sample-output")).to_contain_text("billing")
    submit(page, "#correct")
    expect(page.locator("#decided")).to_contain_text("correct")
    assert console.call(console.app.reviews.get(review_id)).status == "correct"


def test_memory_is_browsed_searched_and_forgotten(console: Console, context: Any) -> None:
    # The console server embeds with the real local MiniLM, like any App by default.
    mem = console.app.memory
    ids = console.call(
        mem.add_many(
            [
                "Ada prefers green tea in the morning",
                "Ada's dog is called Biscuit",
                "Ada lives in Paris",
                "The quarterly report is due on Friday",
            ],
            namespace="user:ada",
        )
    )
    console.call(mem.supersede(ids[2], "Ada lives in Lisbon"))

    # The server loads the model at its first search: done here, over the API, with
    # WAIT to do it in, so the page's search below is not the first.
    status, _ = console.api("GET", "/memory/user%3Aada/search?q=tea", console.tokens["vera"])
    assert status == 200
    page = login(context, console, "rita")
    page.click("#nav-memory")
    page.wait_for_url(re.compile(r"/memory$"))
    row = page.locator('table#namespaces tr[data-namespace="user:ada"]')
    expect(row.locator(".current")).to_have_text("4")
    expect(row.locator(".superseded")).to_have_text("1")
    row.locator("a.namespace").click()
    page.wait_for_url(re.compile(r"/memory/user%3Aada$"))
    expect(
        page.locator(f'table#memories tr.superseded[data-memory-id="{ids[2]}"]')
    ).to_contain_text("until")

    page.fill("#m-q", "what does Ada like to drink?")
    submit(page, "#search")
    hits = page.locator("table#hits tr[data-memory-id]")
    expect(hits).to_have_count(4)  # every current fact, ranked: no floor
    expect(hits.first.locator(".text")).to_have_text("Ada prefers green tea in the morning")
    page.fill("#m-min", "0.5")
    submit(page, "#search")
    expect(page.locator("#m-min")).to_have_value("0.5")  # the floor stays in the form
    shown = [float(t) for t in page.locator("table#hits .relevance").all_inner_texts()]
    assert 1 <= len(shown) < 4 and all(s >= 0.5 for s in shown), shown  # the report is cut
    expect(hits.first.locator(".text")).to_have_text("Ada prefers green tea in the morning")
    shot(page, "memory.png")

    forgettable = page.locator(f'table#memories tr[data-memory-id="{ids[3]}"]')
    submit(page, f'table#memories tr[data-memory-id="{ids[3]}"] form.forget button')
    expect(forgettable).to_have_count(0)
    assert [e.action for e in console.call(console.app.store.audit_log(ids[3]))] == [
        "memory_forgotten"
    ]
