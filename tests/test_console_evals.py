"""The console's Evals pages: a suite's history from the store the console reads, and
one suite run's cases beside the previous run's, the worse ones first, each linked to
its run."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx

import keel
from keel import evals
from keel.engine.runtime import Settings
from keel.server.app import create_app
from keel.server.auth import add_user
from tests.limits import WAIT
from tests.services.pages import element, sign_in

CASES = [
    {"id": "refund", "input": {"text": "refund please"}, "expected": {"category": "billing"}},
    {"id": "outage", "input": {"text": "site is down"}, "expected": {"category": "outage"}},
]


def table(page: str, table_id: str) -> str:
    """The whole table with this id, unescaped."""
    found = re.search(rf'<table id="{table_id}".*?</table>', page, re.S)
    assert found, f"no table #{table_id}"
    return html.unescape(found.group(0))


def classifier(store_url: str, forgets_billing: bool) -> tuple[keel.App, Any]:
    rules = [("down", "outage")] + ([] if forgets_billing else [("refund", "billing")])
    app = keel.App(
        store_url,
        settings=Settings(poll_interval=0.02),
        llm=keel.llm.ScriptedModel(rules=rules, default="general"),
    )

    @app.workflow
    async def classify(ctx: keel.Context, text: str) -> dict[str, str]:
        return {"category": await ctx.llm.text(text, name="classify")}

    return app, classify


async def test_the_history_and_a_run_compared_with_the_previous_one(store_url: str) -> None:
    ids = []
    for degraded in (False, True):  # the second run's model forgot billing
        app, wf = classifier(store_url, degraded)
        suite = evals.Suite(
            "triage", wf, CASES, scorers=[evals.fields("category")], app=app, timeout=WAIT
        )
        ids.append((await suite.run(store=store_url)).eval_id)
        await app.close()
    app = keel.App(store_url)
    server = create_app(app, secure_cookies=False)
    token = await add_user(app.store, "vera", "viewer", [])
    transport = httpx.ASGITransport(app=server, client=("10.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as c:
        assert (await c.get("/evals")).status_code in (303, 401)  # signed out: no page
        await sign_in(c, token)
        page = (await c.get("/evals")).text
        history = table(page, "evals")
        assert history.index(ids[1]) < history.index(ids[0])  # newest first
        assert "fields 0.500" in history and "fields 1.000" in history
        detail = (await c.get(f"/evals/{ids[1]}")).text
        assert html.unescape(element(detail, "eval-outcome")) == "pass"
        assert ids[0] in element(detail, "previous")
        cases = table(detail, "cases")
        assert cases.index("refund") < cases.index("outage")  # the worse case first
        assert "fields 1.000 → 0.000" in cases and "fields: 'general' != 'billing'" in cases
        assert f'href="/runs/{ids[1]}.refund.0"' in cases  # the case's run, in this store
        run = await c.get(f"/runs/{ids[1]}.refund.0")
        assert run.status_code == 200
        assert (await c.get("/evals/nope")).status_code == 404
    await app.close()
