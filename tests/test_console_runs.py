"""The console's runs pages and sampled reviews over HTTP (no browser): run filters
(workflow, status, created since / until) and their errors, a run's journal tree with
the state after each step, the trace waterfall (tool, model and retry spans), escaped
rendering, and verdicts on sampled runs with their permission, CSRF and JSON checks.
The waterfall layout and the state fold are also tested as plain functions."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pydantic import BaseModel, Field

import keel
from keel.engine.runtime import Settings
from keel.hitl import Approval, Sample
from keel.llm import Reply, ScriptedModel
from keel.observe.journal_view import guess_kind, journal_view
from keel.observe.spans import SpanRow
from keel.server.app import create_app
from keel.server.auth import add_user
from keel.server.web.waterfall import layout, money
from tests.limits import WAIT
from tests.services.pages import csrf_of, element, sample_of, sign_in

SETTLE = WAIT  # a bound, never a timing (tests/limits.py)
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


class Tally(BaseModel):
    total: int = 0
    notes: list[str] = Field(default_factory=list)
    last: str = ""




def state_after(page: str, key: str) -> Any:
    """The JSON in `details.state` of the journal's `li.step[data-key=key]`."""
    start = page.index(f'data-key="{html.escape(key)}"')
    found = re.search(
        r'<details class="state">.*?<pre class="data">(.*?)</pre>', page[start:], re.S
    )
    assert found, f"no state for {key}"
    return json.loads(html.unescape(found.group(1)))


def changed(page: str, key: str) -> str | None:
    """The "then set ..." note in the head of the journal's `li.step[data-key=key]`."""
    start = page.index(f'data-key="{html.escape(key)}"')
    head = page[start : page.index("</div>", start)]
    found = re.search(r'<span class="changed muted"[^>]*>(.*?)</span>', head, re.S)
    return html.unescape(found.group(1)) if found else None


def run_rows(page: str) -> list[str]:
    table = page[page.index('<table id="runs"') :]
    table = table[: table.index("</table>")]
    return re.findall(r'<tr data-run-id="([^"]+)"', table)


def bars(page: str) -> list[tuple[str, str, float, float]]:
    """(span name, bar classes, left %, width %) for each `#waterfall .span`."""
    found = re.findall(
        r'<div class="span [^"]*"[^>]*>.*?<span class="span-name">(.*?)</span>.*?'
        r'<div class="bar ([^"]*)" style="left: ([\d.]+)%; width: ([\d.]+)%"',
        page,
        re.S,
    )
    return [(html.unescape(n), c, float(left), float(w)) for n, c, left, w in found]


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def script(messages: list[dict[str, Any]]) -> Reply:
    return Reply(content="looks fine")


class Console:
    def __init__(self, app: keel.App) -> None:
        self.app = app
        self.server = create_app(app, secure_cookies=False)
        self.tokens: dict[str, str] = {}
        self.wf: dict[str, Any] = {}
        self.flaky_calls = 0
        self._clients: list[httpx.AsyncClient] = []

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.server, client=("10.0.0.7", 5000))
        c = httpx.AsyncClient(transport=transport, base_url="http://keel.test")
        self._clients.append(c)
        return c

    async def login(self, user: str) -> httpx.AsyncClient:
        c = self.client()
        await sign_in(c, self.tokens[user])
        return c

    async def run(
        self, workflow: str, args: dict[str, Any], run_id: str, done: bool = True
    ) -> keel.RunInfo:
        handle = await self.app.start(self.wf[workflow], args, id=run_id)
        info = await handle.settle(SETTLE)
        assert info.status.terminal == done, info
        return info

    async def close(self) -> None:
        for c in self._clients:
            await c.aclose()


@pytest.fixture
async def console(store_url: str) -> AsyncIterator[Console]:
    model = ScriptedModel(script, name="wf-model", price_as="gpt-4o-mini")
    app = keel.App(store_url, settings=Settings(poll_interval=0.02), llm=model)
    con = Console(app)

    @app.tool
    async def double(x: int) -> int:
        return 2 * x

    @app.tool
    async def inc(x: int) -> int:
        return x + 1

    @app.tool(retry=keel.Retry(attempts=3, backoff=0.001, jitter=False))
    async def flaky(x: int) -> int:
        con.flaky_calls += 1
        if con.flaky_calls % 3:
            raise ConnectionError("upstream hiccup")
        return x

    async def item(ctx: keel.Context, x: int) -> int:
        ctx.state.last = f"item {x}"
        v: int = await ctx.call(double, x)
        ctx.state.total = v
        await ctx.call(double, v)
        return v

    @app.workflow(state=Tally)
    async def tally(ctx: keel.Context, xs: list[int]) -> dict[str, Any]:
        ctx.state.last = "start"
        res = await ctx.map(item, xs)
        ctx.state.notes = [str(v) for v in res.ok]
        f = await ctx.call(flaky, 1)
        ctx.state.total = sum(res.ok) + f
        summary = await ctx.llm.text("Summarise the tally", name="summary")
        ctx.state.last = summary
        await ctx.call(double, 0)
        return {"total": ctx.state.total, "summary": summary}

    @app.workflow(state=Tally)
    async def phased(ctx: keel.Context) -> int:
        def big_enough(state: Tally) -> list[str]:
            return [] if state.total > 1 else [f"total {state.total} is too small"]

        async for attempt in ctx.phase("fill", check=big_enough, retries=1):
            async with attempt:
                await ctx.call(inc, 100)
                ctx.state.total = await ctx.call(inc, attempt.number)
                await ctx.call(inc, 0)
        ctx.state.last = "done"
        await ctx.call(inc, 1)
        return int(ctx.state.total)

    @app.workflow(state=Tally)
    async def grows(ctx: keel.Context, n: int) -> int:
        for i in range(n):
            ctx.state.notes.append(f"n{i}")  # journaled as an append patch
            await ctx.call(inc, i)
        ctx.state.notes.append("end")  # after the last step: only in the final state
        ctx.state.last = "grown"
        return len(ctx.state.notes)

    @app.tool(approval=Approval(queue="payments", reason="a person checks each payout"))
    async def payout(n: int) -> str:
        return f"paid {n}"

    async def pay_one(ctx: keel.Context, n: int) -> str:
        ctx.state.last = f"paying {n}"
        await ctx.call(double, n)
        paid: str = await ctx.call(payout, n)
        return paid

    @app.workflow(state=Tally)
    async def payouts(ctx: keel.Context, ns: list[int]) -> list[str]:
        ctx.state.total = len(ns)
        res = await ctx.map(pay_one, ns)
        return [str(v) for v in res.ok]

    @app.workflow
    async def echo(ctx: keel.Context, text: str) -> dict[str, str]:
        return {"echo": text}

    @app.workflow
    async def broken(ctx: keel.Context, why: str) -> str:
        raise ValueError(why) from KeyError("ledger row missing")

    @app.workflow(sample=Sample(rate=1.0, queue="qa"))
    async def label(ctx: keel.Context, text: str) -> str:
        return "billing" if "refund" in text else "general"

    con.wf = {w.__name__: w for w in (tally, phased, grows, payouts, echo, broken, label)}
    for name, role, groups in [
        ("vera", "viewer", []),
        ("rita", "reviewer", ["qa"]),
        ("otto", "reviewer", ["support"]),
        ("ada", "admin", []),
    ]:
        con.tokens[name] = await add_user(app.store, name, role, groups)
    yield con
    await con.close()
    await app.close()


# -- the waterfall layout, as a function ---------------------------------------------------


def span(
    sid: int,
    parent: int | None,
    name: str,
    start: float,
    end: float | None,
    status: str = "OK",
    **attrs: Any,
) -> SpanRow:
    return SpanRow(
        span_id=sid,
        trace_id=1,
        parent_id=parent,
        run_id="r",
        name=name,
        kind="INTERNAL",
        start_ns=int(start * 1e9),
        end_ns=None if end is None else int(end * 1e9),
        status=status,
        status_message="ConnectionError: hiccup" if status == "ERROR" else None,
        attributes=attrs,
    )


def test_layout_places_bars_relative_to_the_root_and_nests_by_parent() -> None:
    spans = [
        span(9, 1, "llm:summary#0", 6.0, 10.0, **{"keel.step.kind": "llm",
                                                   "keel.step.key": "llm:summary#0"}),
        span(1, None, "invoke_workflow wf", 0.0, 10.0,
             **{"gen_ai.operation.name": "invoke_workflow"}),
        span(2, 1, "flaky#0", 1.0, 5.0, **{"keel.step.kind": "tool", "keel.step.attempts": 3,
                                           "keel.step.key": "flaky#0", "keel.fallback": "degrade"}),
        span(4, 2, "execute_tool flaky", 2.0, 2.5, "ERROR",
             **{"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "flaky",
                "keel.attempt": 2}),
        span(3, 2, "execute_tool flaky", 1.0, 1.5, "ERROR",
             **{"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "flaky",
                "keel.attempt": 1}),
        span(5, 2, "execute_tool flaky", 4.0, 5.0,
             **{"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "flaky",
                "keel.attempt": 3}),
        span(10, 9, "chat gpt-x", 6.0, 10.0, **{
            "gen_ai.operation.name": "chat", "keel.llm.model": "openai/gpt-x",
            "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 3,
            "keel.cost.usd": 0.0004, "keel.attempt": 1,
            "keel.llm.tried": ["a/m1", "openai/gpt-x"]}),
    ]
    rows = layout(spans)
    assert [r.name for r in rows] == [
        "invoke_workflow wf", "flaky#0", "execute_tool flaky", "execute_tool flaky",
        "execute_tool flaky", "llm:summary#0", "chat gpt-x",
    ]
    assert [r.depth for r in rows] == [0, 1, 2, 2, 2, 1, 2]
    root, step, a1, a2, a3, llm_step, chat = rows
    assert (root.left, root.width, root.css) == (0.0, 100.0, "root")
    assert (step.left, step.width) == (10.0, 40.0)
    assert "fallback" in step.css and step.fallback == "degrade" and step.attempts == 3
    # failed attempts that were retried are "retry"; the final one is a plain tool call
    assert a1.css == "tool retry" and a2.css == "tool retry" and a1.retried
    assert (a1.attempt, a2.attempt, a3.attempt) == (1, 2, 3)
    assert a3.css == "tool" and a3.error is None and a1.error == "ConnectionError: hiccup"
    assert a2.left == 20.0 and a2.width == 5.0 and a2.duration == pytest.approx(0.5)
    assert llm_step.css == "llm"
    assert chat.css.startswith("llm") and chat.model == "openai/gpt-x"
    assert (chat.input_tokens, chat.output_tokens, chat.cost) == (12, 3, 0.0004)
    assert chat.fallback == "tried a/m1 → openai/gpt-x"
    assert chat.style == "left: 60.000%; width: 40.000%"
    for r in rows:
        assert r.left >= 0 and r.left + r.width <= 100.0 + 1e-9, r


def test_layout_of_an_open_trace_and_of_odd_input() -> None:
    assert layout([]) == []
    # A waiting run: the root is open; bars span to the latest time seen.
    rows = layout([
        span(1, None, "invoke_workflow wf", 100.0, None),
        span(2, 1, "sleep#0", 101.0, 104.0, **{"keel.step.kind": "sleep"}),
        span(3, 77, "orphan#0", 102.0, 103.0, "ERROR", **{"keel.step.kind": "tool"}),
    ])
    assert [(r.name, r.depth) for r in rows] == [
        ("invoke_workflow wf", 0), ("sleep#0", 1), ("orphan#0", 0)
    ]
    root, sleep, orphan = rows
    assert root.open and root.duration is None and "open" in root.css
    assert (root.left, root.width) == (0.0, 100.0)
    assert (sleep.left, sleep.width, sleep.css) == (25.0, 75.0, "step")
    assert orphan.css == "tool error" and orphan.error
    # zero-length trace: no division by zero, bars inside the track
    [one] = layout([span(1, None, "invoke_workflow x", 5.0, 5.0)])
    assert one.left == 0.0 and one.width == 0.0
    # a parent cycle cannot loop forever
    cyc = layout([span(1, 2, "a", 0.0, 1.0), span(2, 1, "b", 0.5, 1.0)])
    assert sorted(r.name for r in cyc) == ["a", "b"]


def test_money_is_legible_at_any_size() -> None:
    assert money(None) == "—" and money(0.0) == "—"
    assert money(2.5) == "$2.50" and money(0.0132) == "$0.0132"
    assert money(1.8e-06) == "$0.0000018"


# -- runs list and filters -------------------------------------------------------------------


async def test_runs_are_listed_newest_first_and_filtered(console: Console) -> None:
    await console.run("echo", {"text": "hello"}, "echo-1")
    await console.run("broken", {"why": "no input"}, "broken-1")
    await console.run("label", {"text": "refund please"}, "label-1")
    store = console.app.store
    for run_id, created in [("old-1", "2026-01-01T00:00"), ("mid-1", "2026-03-01T12:00"),
                            ("late-1", "2026-06-01T08:30")]:
        await store.create_run(run_id, "archived", b'{"n": 1}', epoch(created))

    c = await console.login("vera")
    page = await c.get("/runs")
    assert page.status_code == 200
    rows = run_rows(page.text)
    assert rows[:3] == ["label-1", "broken-1", "echo-1"]  # newest first
    assert rows[3:] == ["late-1", "mid-1", "old-1"]
    row = page.text[page.text.index('data-run-id="broken-1"') :]
    row = row[: row.index("</tr>")]
    assert 'href="/runs/broken-1"' in row and 'class="run"' in row
    for cell in ("workflow", "status", "created", "duration", "cost"):
        assert re.search(rf'<td class="{cell}[ "]', row), cell
    assert ">broken<" in row and "FAILED" in row

    r = await c.get("/runs", params={"workflow": "echo"})
    assert run_rows(r.text) == ["echo-1"]
    assert 'name="workflow" value="echo"' in r.text  # the form keeps what was entered
    r = await c.get("/runs", params={"status": "FAILED"})
    assert run_rows(r.text) == ["broken-1"]
    assert '<option value="FAILED" selected>' in r.text
    r = await c.get("/runs", params={"status": "succeeded", "workflow": "label"})
    assert run_rows(r.text) == ["label-1"]
    r = await c.get("/runs", params={"status": "PENDING"})
    assert run_rows(r.text) == ["late-1", "mid-1", "old-1"]

    # since / until as a datetime-local input sends them (UTC), and as epoch seconds
    r = await c.get("/runs", params={"since": "2026-02-01T00:00", "until": "2026-06-01T08:30"})
    assert r.status_code == 200 and run_rows(r.text) == ["mid-1"]
    assert 'name="since" value="2026-02-01T00:00"' in r.text
    assert 'type="datetime-local" id="f-since"' in r.text
    r = await c.get("/runs", params={"since": "2026-03-01T12:00:00", "workflow": "archived"})
    assert run_rows(r.text) == ["late-1", "mid-1"]
    r = await c.get("/runs", params={"until": str(int(epoch("2026-02-01T00:00")))})
    assert run_rows(r.text) == ["old-1"]
    r = await c.get("/runs", params={"since": "2026-05-01T00:00Z"})
    assert run_rows(r.text) == ["label-1", "broken-1", "echo-1", "late-1"]


async def test_a_bad_time_or_status_filter_is_shown_on_the_page(console: Console) -> None:
    await console.run("echo", {"text": "hello"}, "echo-1")
    c = await console.login("vera")
    r = await c.get("/runs", params={"since": "last tuesday", "workflow": "echo"})
    assert r.status_code == 422
    assert "since 'last tuesday' is not a time" in element(r.text, "filter-error")
    assert "since" in element(r.text, "err-since")
    assert run_rows(r.text) == []
    # the bad value stays in the form (as text, which a datetime-local input cannot hold)
    assert 'type="text" id="f-since" name="since" value="last tuesday"' in r.text
    assert 'name="workflow" value="echo"' in r.text
    r = await c.get("/runs", params={"until": "2026-13-45T99:00"})
    assert r.status_code == 422 and "until" in element(r.text, "err-until")
    r = await c.get("/runs", params={"status": "DONE"})
    assert r.status_code == 422 and "not a run status" in element(r.text, "err-status")
    r = await c.get("/runs", params={"since": XSS})
    assert r.status_code == 422 and "<script>" not in r.text and "&lt;script&gt;" in r.text


# -- a run's page: journal, state, waterfall ---------------------------------------------------


async def test_a_run_page_shows_its_journal_with_the_state_after_each_step(
    console: Console,
) -> None:
    info = await console.run("tally", {"xs": [1, 2]}, "tally-1")
    assert info.status is keel.RunStatus.SUCCEEDED, info
    c = await console.login("vera")
    r = await c.get("/runs/tally-1")
    assert r.status_code == 200
    page = r.text
    assert element(page, "run-status") == "SUCCEEDED"
    assert json.loads(element(page, "run-input")) == {"xs": [1, 2]}
    assert json.loads(element(page, "run-result")) == {"total": 7, "summary": "looks fine"}
    assert element(page, "run-cost").startswith("$")
    journal = page[page.index('id="journal"') : page.index('id="waterfall"')]
    keys = re.findall(r'<li class="step[^"]*" data-key="([^"]+)"', journal)
    assert keys == [
        "map:item#0", "map:item#0/0", "map:item#0/0/double#0", "map:item#0/0/double#1",
        "map:item#0/1", "map:item#0/1/double#0", "map:item#0/1/double#1",
        "flaky#0", "llm:summary#0", "double#0",
    ]
    # map items nest under the map, their steps under each item
    item0 = journal[journal.index('data-key="map:item#0/0"') :]
    assert item0.index("<ul>") < item0.index('data-key="map:item#0/0/double#0"')
    flaky = journal[journal.index('data-key="flaky#0"') :]
    flaky = flaky[: flaky.index("</li>")]
    assert "3 attempts" in flaky and "flaky" in flaky and "ok" in flaky
    llm = journal[journal.index('data-key="llm:summary#0"') :]
    llm = llm[: llm.index("</li>")]
    assert "keel-scripted/wf-model" in llm and re.search(r'class="cost">\$0\.0+\d+<', llm)

    # each change is shown on the step after which the workflow made it
    start = {"total": 0, "notes": [], "last": ""}
    assert "then set last" in element(page, "run-start-changed")  # set before the first step
    assert state_after(page, "map:item#0") == {**start, "notes": ["2", "4"], "last": "start"}
    assert changed(page, "map:item#0") == "then set notes"
    # each map item works on its own copy of the state, forked when the map began;
    # an item's state is the state it ended with, its changes those before its first step
    assert changed(page, "map:item#0/0") == "then set last"
    assert state_after(page, "map:item#0/0/double#0") == {**start, "total": 2, "last": "item 1"}
    assert changed(page, "map:item#0/0/double#0") == "then set total"
    assert state_after(page, "map:item#0/0/double#1") == {**start, "total": 2, "last": "item 1"}
    assert changed(page, "map:item#0/0/double#1") is None
    assert state_after(page, "map:item#0/1/double#1") == {**start, "total": 4, "last": "item 2"}
    assert state_after(page, "map:item#0/1") == {**start, "total": 4, "last": "item 2"}
    assert state_after(page, "flaky#0") == {"total": 7, "notes": ["2", "4"], "last": "start"}
    assert state_after(page, "llm:summary#0") == {
        "total": 7, "notes": ["2", "4"], "last": "looks fine"
    }
    final = state_after(page, "double#0")
    assert final == {"total": 7, "notes": ["2", "4"], "last": "looks fine"}
    assert final == (await console.app.get_run("tally-1")).state


async def test_the_fold_restarts_each_phase_attempt_from_the_phase_start(
    console: Console,
) -> None:
    info = await console.run("phased", {}, "phased-1")
    assert info.status is keel.RunStatus.SUCCEEDED and info.result == 2, info
    steps = await console.app.steps("phased-1")
    view = journal_view(info, steps, Tally().model_dump(mode="json"), set(Tally.model_fields))
    nodes = view.by_key()
    assert [n.key for n in view.roots] == ["phase:fill#0", "inc#0"]
    assert [n.key for n in nodes["phase:fill#0"].children] == ["phase:fill#0/0", "phase:fill#0/1"]
    assert nodes["phase:fill#0/0/inc#1"].state == {"total": 1, "notes": [], "last": ""}
    assert nodes["phase:fill#0/0/inc#1"].changed == ["total"]
    assert nodes["phase:fill#0/0/inc#2"].state == {"total": 1, "notes": [], "last": ""}
    assert nodes["phase:fill#0/0"].state == {"total": 1, "notes": [], "last": ""}  # its end
    # attempt 1 begins where the phase began, not where attempt 0 left off
    assert nodes["phase:fill#0/1/inc#0"].state == {"total": 0, "notes": [], "last": ""}
    assert nodes["phase:fill#0/1/inc#1"].state == {"total": 2, "notes": [], "last": ""}
    assert nodes["phase:fill#0/1/inc#2"].state == {"total": 2, "notes": [], "last": ""}
    # `last` was set after the phase ended, before the step after it
    assert nodes["phase:fill#0"].state == {"total": 2, "notes": [], "last": "done"}
    assert nodes["phase:fill#0"].changed == ["last"]
    assert nodes["inc#0"].state == {"total": 2, "notes": [], "last": "done"} == info.state

    c = await console.login("vera")
    page = (await c.get("/runs/phased-1")).text
    assert state_after(page, "phase:fill#0/1/inc#0") == {"total": 0, "notes": [], "last": ""}
    assert state_after(page, "inc#0") == info.state


async def test_appended_lists_fold_exactly_and_the_last_change_is_shown(
    console: Console,
) -> None:
    info = await console.run("grows", {"n": 50}, "grows-1")
    assert info.result == 51, info
    steps = {s.key: s for s in await console.app.steps("grows-1")}
    assert steps["inc#10"].state_delta == {"$patch": {"notes": {"append": ["n10"]}}}
    c = await console.login("vera")
    page = (await c.get("/runs/grows-1")).text
    notes = [f"n{i}" for i in range(50)]
    assert "then set notes" in element(page, "run-start-changed")
    for i in (0, 1, 10, 48):
        assert state_after(page, f"inc#{i}") == {"total": 0, "notes": notes[: i + 2], "last": ""}
        assert changed(page, f"inc#{i}") == "then set notes"
    # the changes after the last step are shown on it, from the run's final state
    assert changed(page, "inc#49") == "then set notes, last"
    assert state_after(page, "inc#49") == info.state == {
        "total": 0, "notes": [*notes, "end"], "last": "grown"
    }


def test_journal_tree_gives_an_unrecorded_parent_a_placeholder() -> None:
    from keel.types import RunInfo, RunStatus, StepKind, StepRecord, StepStatus

    def rec(key: str, scope: str, pos: int, kind: StepKind, delta: Any = None) -> StepRecord:
        return StepRecord(run_id="r", key=key, scope=scope, position=pos, kind=kind,
                          name=key, digest="", status=StepStatus.OK, started_at=float(pos),
                          ended_at=float(pos), state_delta=delta)

    # a phase still running (its own record comes at its end) and a step before it
    steps = [
        rec("phase:p#0/0/a#0", "phase:p#0/0/", 0, StepKind.TOOL, {"x": 2}),
        rec("phase:p#0/0/b#0", "phase:p#0/0/", 1, StepKind.TOOL, {"y": 3}),
        rec("first#0", "", 0, StepKind.TOOL, {"x": 1}),
    ]
    run = RunInfo(id="r", workflow="w", status=RunStatus.RUNNING, input={},
                  created_at=0.0, updated_at=0.0)
    view = journal_view(run, steps, {"x": 0, "y": 0})
    roots = view.roots
    assert [(n.key, n.rec is not None) for n in roots] == [("first#0", True), ("phase:p#0", False)]
    phase = roots[1]
    assert phase.kind is StepKind.PHASE and phase.children[0].key == "phase:p#0/0"
    assert phase.children[0].rec is None and phase.children[0].kind is StepKind.PHASE
    assert guess_kind("map:f#0/3") is StepKind.CHILD and guess_kind("gather#1/0") is StepKind.CHILD
    assert guess_kind("map:f#0") is StepKind.MAP and guess_kind("double#0") is None
    # x=1 was set before the first step; x=2 before the phase (recorded with its first
    # step); y=3 after the phase's first step
    assert view.start.changed == ["x"] and view.start.state == {"x": 1, "y": 0}
    assert roots[0].changed == ["x"] and roots[0].state == {"x": 2, "y": 0}
    a, b = phase.children[0].children
    assert a.changed == ["y"] and a.state == {"x": 2, "y": 3}
    assert b.changed == [] and b.state == {"x": 2, "y": 3}
    assert phase.state == {"x": 2, "y": 3}
    assert not any(n.partial for n in view.nodes())

    # a map in progress: its items fork from the state as the map began, but what was
    # changed just before it is recorded only when it ends ("so far")
    steps = [
        rec("first#0", "", 0, StepKind.TOOL),
        rec("map:m#0/0", "map:m#0/", 0, StepKind.CHILD),
        rec("map:m#0/0/a#0", "map:m#0/0/", 0, StepKind.TOOL, {"y": 5}),
        rec("map:m#0/0/b#0", "map:m#0/0/", 1, StepKind.TOOL),
    ]
    view = journal_view(run, steps, {"x": 0, "y": 0})
    nodes = view.by_key()
    assert nodes["map:m#0"].rec is None and nodes["map:m#0"].partial
    assert nodes["map:m#0/0"].changed == ["y"] and nodes["map:m#0/0"].partial
    assert nodes["map:m#0/0/a#0"].state == {"x": 0, "y": 5} and not nodes["first#0"].partial


def test_the_fold_skips_a_phase_resolution_the_run_refused() -> None:
    from keel.types import RunInfo, RunStatus, StepKind, StepRecord, StepStatus

    def rec(key: str, pos: int, kind: StepKind, out: Any = None, ok: bool = True) -> StepRecord:
        scope = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
        return StepRecord(run_id="r", key=key, scope=scope, position=pos, kind=kind, name=key,
                          digest="", status=StepStatus.OK if ok else StepStatus.ERROR,
                          started_at=float(pos), ended_at=float(pos), output=out)

    def resolved(edits: dict[str, Any]) -> dict[str, Any]:
        return {"status": "resolved", "result": edits, "by": "ana"}

    steps = [
        rec("phase:p#0/0", 0, StepKind.PHASE, ok=False),
        rec("phase:p#0/escalation", 1, StepKind.PHASE, "r:phase:p#0"),
        rec("phase:p#0/resolution", 2, StepKind.SIGNAL, resolved({"x": 9})),  # refused
        rec("phase:p#0/escalation~2", 3, StepKind.PHASE, "r:phase:p#0~2"),
        rec("phase:p#0/resolution~2", 4, StepKind.SIGNAL, resolved({"x": 5})),
        rec("phase:p#0", 0, StepKind.PHASE),
    ]
    run = RunInfo(id="r", workflow="w", status=RunStatus.SUCCEEDED, input={},
                  created_at=0.0, updated_at=0.0)
    nodes = journal_view(run, steps, {"x": 0}, {"x"}).by_key()
    assert nodes["phase:p#0"].state == {"x": 5}
    assert nodes["phase:p#0/resolution"].changed == []  # refused: it set nothing
    assert nodes["phase:p#0/resolution~2"].changed == ["x"]
    assert nodes["phase:p#0/resolution~2"].state == {"x": 5}


async def test_the_waterfall_has_tool_model_and_retry_spans(console: Console) -> None:
    await console.run("tally", {"xs": [1, 2]}, "tally-2")
    c = await console.login("vera")
    page = (await c.get("/runs/tally-2")).text
    found = bars(page)
    assert len(found) == page.count('<div class="span ')
    assert found[0][0] == "invoke_workflow tally" and found[0][1] == "root"
    for name, _, left, width in found:
        assert left >= 0 and left + width <= 100.5, (name, left, width)
    names = [n for n, *_ in found]
    assert names.count("execute_tool double") == 5
    flaky = [(css, left) for n, css, left, _ in found if n == "execute_tool flaky"]
    assert [css for css, _ in flaky] == ["tool retry", "tool retry", "tool"]
    assert [left for _, left in flaky] == sorted(left for _, left in flaky)
    chat = [css for n, css, *_ in found if n == "chat wf-model"]
    assert chat == ["llm"]
    waterfall = page[page.index('id="waterfall"') :]
    assert "attempt 1/3" in waterfall and "attempt 3/3" in waterfall
    assert "ConnectionError" in waterfall
    chat_row = waterfall[waterfall.index("chat wf-model") :]
    chat_row = chat_row[: chat_row.index('class="track"')]
    assert "keel-scripted/wf-model" in chat_row
    assert re.search(r'class="span-cost">\$0\.0+\d+<', chat_row), chat_row
    assert re.search(r"\d+→\d+ tok", chat_row)
    # the map item spans sit inside the map's bar
    spans = {n: (left, width) for n, _, left, width in found}
    map_left, map_width = spans["map:item#0"]
    item_left, item_width = spans["map:item#0/0"]
    assert map_left <= item_left and item_left + item_width <= map_left + map_width + 0.01


async def test_a_waiting_run_shows_steps_in_progress_and_its_approvals(
    console: Console,
) -> None:
    info = await console.run("payouts", {"ns": [3, 4]}, "wait-1", done=False)
    assert info.status is keel.RunStatus.WAITING, info
    reqs = [r for r in await console.app.approvals.list(status="all") if r.run_id == "wait-1"]
    assert len(reqs) == 2
    c = await console.login("vera")
    r = await c.get("/runs/wait-1")
    assert r.status_code == 200
    page = r.text
    assert element(page, "run-status") == "WAITING"
    journal = page[page.index('id="journal"') : page.index('id="waterfall"')]
    # the map and its items have no record until they finish: placeholders hold their steps
    for key in ("map:pay_one#0", "map:pay_one#0/0", "map:pay_one#0/1"):
        node = journal[journal.index(f'data-key="{key}"') :]
        assert "in progress" in node[: node.index("</div>")], key
    # what the map's items did is on record; what was set just before the map (total)
    # is in the waiting run's state snapshot: the items' copies hold it
    assert state_after(page, "map:pay_one#0/1/double#0") == {
        "total": 2, "notes": [], "last": "paying 4"
    }
    assert "then set total" in element(page, "run-start-changed")
    assert "(so far)" not in journal
    for req in reqs:
        assert f'href="/approvals/{quote(req.id, safe="")}"' in journal
    assert 'id="run-requests"' in page
    rows = bars(page)
    assert rows[0][0] == "invoke_workflow payouts" and "open" in rows[0][1]
    for name, _, left, width in rows:
        assert left >= 0 and left + width <= 100.5, (name, left, width)


async def test_stored_markup_in_a_run_renders_as_text(console: Console) -> None:
    await console.run("echo", {"text": XSS}, "xss-1")
    await console.run("broken", {"why": XSS}, "xss-2")
    c = await console.login("vera")
    for run_id in ("xss-1", "xss-2"):
        r = await c.get(f"/runs/{run_id}")
        assert r.status_code == 200
        assert "<script>" not in r.text and "<img src=x" not in r.text
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
    page = (await c.get("/runs/xss-1")).text
    assert XSS in json.loads(element(page, "run-input"))["text"]
    assert XSS in json.loads(element(page, "run-result"))["echo"]
    failed = (await c.get("/runs/xss-2")).text
    assert element(failed, "run-status") == "FAILED"
    shown = failed[failed.index('id="run-error"') :]
    assert "ValueError" in shown and "caused by <code>KeyError</code>" in shown
    listing = (await c.get("/runs", params={"workflow": XSS})).text
    assert "<script>" not in listing


async def test_run_ids_with_slashes_open_and_unknown_ids_get_a_404_page(
    console: Console,
) -> None:
    await console.run("echo", {"text": "hi"}, "team/a-1")
    await console.run("label", {"text": "refund"}, "team/b-1")
    c = await console.login("rita")
    r = await c.get("/runs/" + quote("team/a-1", safe=""))
    assert r.status_code == 200 and element(r.text, "run-id") == "team/a-1"
    assert 'href="/runs/team%2Fa-1"' in (await c.get("/runs")).text
    rid = "team/b-1:sample"
    page = await c.get(review_url(rid))
    assert page.status_code == 200 and 'id="verdict-form"' in page.text
    assert f'action="{review_url(rid, "/verdict")}"' in page.text
    r = await c.post(review_url(rid, "/verdict"),
                     data={"csrf": csrf_of(page.text), "verdict": "correct"})
    assert r.status_code == 303 and (await console.app.reviews.get(rid)).status == "correct"
    for path in ("/runs/nope", "/runs/" + quote("no/such", safe=""), review_url("no:sample"),
                 review_url("team/b-1:sample/x")):
        r = await c.get(path)
        assert r.status_code == 404 and 'id="error-message"' in r.text, path


# -- sampled reviews ---------------------------------------------------------------------------


async def sampled(console: Console, run_id: str, text: str = "please refund my order") -> str:
    await console.run("label", {"text": text}, run_id)
    req = await sample_of(console.app, run_id)
    assert req.status == "pending"
    return str(req.id)


def review_url(review_id: str, tail: str = "") -> str:
    return f"/reviews/{quote(review_id, safe='')}{tail}"


async def verdict(
    c: httpx.AsyncClient, review_id: str, data: dict[str, str], csrf: str | None = None
) -> httpx.Response:
    page = await c.get(review_url(review_id))
    token = csrf_of(page.text) if csrf is None else csrf
    return await c.post(review_url(review_id, "/verdict"), data={"csrf": token, **data})


async def test_the_sampled_review_list_links_each_sample(console: Console) -> None:
    first = await sampled(console, "s-1")
    second = await sampled(console, "s-2", "where is my parcel")
    c = await console.login("vera")
    page = (await c.get("/reviews")).text
    ids = re.findall(r'<li class="item sample" data-id="([^"]+)"', page)
    assert ids == [first, second]
    assert f'href="{review_url(first)}"' in page and 'class="open"' in page
    r = await c.get(review_url(first))
    assert "please refund my order" in element(r.text, "sample-input")
    assert element(r.text, "sample-output") == "billing"
    r = await c.get("/reviews", params={"status": "bogus"})
    assert r.status_code == 422 and "bogus" in element(r.text, "filter-error")


async def test_a_reviewer_records_a_verdict_once(console: Console) -> None:
    good = await sampled(console, "s-1")
    bad = await sampled(console, "s-2", "refund and also cancel")
    c = await console.login("rita")
    page = (await c.get(review_url(good))).text
    assert 'id="verdict-form"' in page and 'id="correct"' in page and 'id="incorrect"' in page
    assert 'id="read-only"' not in page

    r = await verdict(c, good, {"verdict": "correct", "note": "right call"})
    assert r.status_code == 303 and r.headers["location"] == review_url(good)
    done = await console.app.reviews.get(good)
    assert (done.status, done.decided_by) == ("correct", "rita")
    assert done.decision is not None and done.decision["note"] == "right call"
    shown = (await c.get(review_url(good))).text
    assert "correct" in element(shown, "decided") and 'id="verdict-form"' not in shown

    r = await verdict(c, bad, {"verdict": "incorrect", "label": '"cancellation"'})
    assert r.status_code == 303
    done = await console.app.reviews.get(bad)
    assert done.status == "incorrect"
    assert done.decision is not None and done.decision["label"] == "cancellation"
    [case] = [x for x in await console.app.reviews.export() if x["id"] == bad]
    assert case["expected"] == "cancellation" and case["case"] == "positive"

    # a second verdict is refused and shows who decided
    page = (await c.get(review_url(bad))).text
    r = await c.post(review_url(bad, "/verdict"),
                     data={"csrf": csrf_of(page), "verdict": "correct"})
    assert r.status_code == 409
    assert "already incorrect by rita" in element(r.text, "err-form")
    assert 'id="decided"' in r.text
    assert (await console.app.reviews.get(bad)).status == "incorrect"


async def test_an_invalid_label_is_shown_by_its_field_and_nothing_is_decided(
    console: Console,
) -> None:
    rid = await sampled(console, "s-1")
    c = await console.login("ada")
    r = await verdict(c, rid, {"verdict": "incorrect", "label": '{"category": billing}',
                               "note": "kept"})
    assert r.status_code == 422
    assert "not valid JSON" in element(r.text, "err-label")
    assert 'aria-invalid="true"' in r.text
    assert '{&#34;category&#34;: billing}' in r.text or "{&quot;category&quot;: billing}" in r.text
    assert ">kept</textarea>" in r.text
    assert (await console.app.reviews.get(rid)).status == "pending"
    # JSON, but not what the workflow returns (a string): shown by the field, not recorded
    r = await verdict(c, rid, {"verdict": "incorrect", "label": '{"category": "billing"}'})
    assert r.status_code == 422
    assert "(label): expected string, got dict" in element(r.text, "err-label")
    assert (await console.app.reviews.get(rid)).status == "pending"
    r = await verdict(c, rid, {"verdict": "maybe"})
    assert r.status_code == 422 and (await console.app.reviews.get(rid)).status == "pending"


async def test_viewers_and_other_queues_get_no_form_and_a_403(console: Console) -> None:
    rid = await sampled(console, "s-1")
    for user in ("vera", "otto"):
        c = await console.login(user)
        page = (await c.get(review_url(rid))).text
        assert 'id="verdict-form"' not in page and 'id="correct"' not in page
        assert "Read only" in element(page, "read-only")
        r = await c.post(review_url(rid, "/verdict"),
                         data={"csrf": csrf_of(page), "verdict": "correct"})
        assert r.status_code == 403, user
        assert (await console.app.reviews.get(rid)).status == "pending"


async def test_a_verdict_without_the_csrf_token_changes_nothing(console: Console) -> None:
    rid = await sampled(console, "s-1")
    c = await console.login("rita")
    r = await c.post(review_url(rid, "/verdict"), data={"verdict": "correct"})
    assert r.status_code == 403 and "CSRF check failed" in r.text
    r = await verdict(c, rid, {"verdict": "correct"}, csrf="forged")
    assert r.status_code == 403 and "CSRF check failed" in r.text
    assert (await console.app.reviews.get(rid)).status == "pending"


async def test_anonymous_requests_go_to_the_login_page(console: Console) -> None:
    rid = await sampled(console, "s-1")
    c = console.client()
    for path in ("/runs", "/runs/s-1", "/runs?status=FAILED", "/reviews", review_url(rid)):
        r = await c.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next="), path
        assert "refund" not in r.text
    r = await c.post(review_url(rid, "/verdict"), data={"csrf": "x", "verdict": "correct"})
    assert r.status_code == 401
    assert (await console.app.reviews.get(rid)).status == "pending"


async def test_a_run_links_the_requests_it_made(console: Console) -> None:
    rid = await sampled(console, "s-1")
    c = await console.login("vera")
    page = (await c.get("/runs/s-1")).text
    section = page[page.index('id="run-requests"') :]
    assert f'href="{review_url(rid)}"' in section


async def test_decided_samples_list_the_latest_verdict_first(console: Console) -> None:
    first = await sampled(console, "s-1")
    second = await sampled(console, "s-2", "where is my parcel")
    waiting = await sampled(console, "s-3", "cancel my order")
    await console.app.reviews.verdict(second, True, by="rita")
    await console.app.reviews.verdict(first, False, by="rita")  # the latest verdict
    c = await console.login("vera")
    ids = lambda page: re.findall(r'<li class="item sample" data-id="([^"]+)"', page)  # noqa: E731
    assert ids((await c.get("/reviews")).text) == [waiting]
    assert ids((await c.get("/reviews", params={"status": "all"})).text) == [
        first, second, waiting]
    assert ids((await c.get("/reviews", params={"status": "correct"})).text) == [second]
