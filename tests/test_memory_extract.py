"""Memory off the hot path: `ctx.memory.extract` starts an extraction run of its own and
returns at once; the extraction writes what the model found into long-term memory, each
item with a status (added, duplicate, invalid, skipped) that says what made it in."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import keel
from keel.errors import RunFailed
from keel.llm import ScriptedModel
from keel.memory.extract import WORKFLOW
from keel.types import RunStatus
from tests.limits import WAIT

TRANSCRIPT = """user: Hi, it's Ada again. I moved to Lisbon last month.
assistant: Welcome back, Ada! How can I help?
user: Please always send invoices to billing@ada.example, not my personal address.
assistant: Noted. Anything else?
user: My order 7781 arrived damaged."""


def _facts(messages: list[dict[str, Any]]) -> str:
    """The offline model: a fact per user line of the transcript, plus an empty one."""
    prompt = messages[-1]["content"]
    body = re.search(r"<transcript>\n(.*)\n</transcript>", prompt, re.S)
    lines = body.group(1).splitlines() if body else []
    facts = [f"Ada said: {ln.removeprefix('user: ')}" for ln in lines if ln.startswith("user:")]
    return json.dumps({"facts": [*facts, "  "]})


@pytest.fixture
async def make(store_url: str) -> AsyncIterator[Callable[..., keel.App]]:
    apps: list[keel.App] = []

    def make(**kw: Any) -> keel.App:
        app = keel.App(store_url, **kw)
        apps.append(app)

        @app.workflow(name="chat")
        async def chat(ctx: keel.Context, transcript: str, budget: float | None = None) -> str:
            return await ctx.memory.extract(transcript, namespace="u:ada", max_cost_usd=budget)

        return app

    yield make
    for app in apps:
        await app.close()


async def _extracted(app: keel.App, transcript: str, budget: float | None = None) -> str:
    extraction_id: str = await (
        await app.start("chat", {"transcript": transcript, "budget": budget})
    ).result(WAIT)
    await app.handle(extraction_id, WORKFLOW).result(WAIT)  # raises if it failed
    return extraction_id


async def test_facts_go_in_with_a_status_each_and_repeats_are_not_added_twice(
    make: Callable[..., keel.App],
) -> None:
    app = make(llm=ScriptedModel(_facts))
    first = await _extracted(app, TRANSCRIPT)
    assert "~memory-" in first
    items = await app.memory.extracts(first)
    assert [i.status for i in items] == ["added", "added", "added", "invalid"]
    assert items[-1].reason == "empty"
    stored = {m.id: m for m in await app.memory.list(namespace="u:ada")}
    assert {i.memory_id for i in items[:3]} == set(stored)
    asked = (await app.get_run(first)).input["source_run"]
    assert all(m.metadata == {"source_run": asked} for m in stored.values())
    hits = await app.memory.search("where does Ada live now?", namespace="u:ada", k=1)
    assert hits[0].text == "Ada said: Hi, it's Ada again. I moved to Lisbon last month."

    again = await _extracted(app, TRANSCRIPT + "\nuser: I prefer email over phone calls.")
    items = await app.memory.extracts(again)
    assert [i.status for i in items] == ["duplicate"] * 3 + ["added", "invalid"]
    assert [i.memory_id for i in items[:3]] == [
        i.memory_id for i in (await app.memory.extracts(first))[:3]
    ]
    assert len(await app.memory.list(namespace="u:ada")) == 4


async def test_the_run_that_asked_does_not_wait_and_starting_is_once(
    make: Callable[..., keel.App],
) -> None:
    app = make(llm=ScriptedModel(_facts))
    handle = await app.start("chat", {"transcript": TRANSCRIPT}, id="conv-1")
    extraction_id = await handle.result(WAIT)
    assert extraction_id.startswith("conv-1~memory-")
    steps = [s.name for s in await app.steps("conv-1")]
    assert steps == ["memory.extract"]  # no model call, no memory write in the asking run
    counts = await app.handle(extraction_id, WORKFLOW).result(WAIT)
    assert counts == {"added": 3, "invalid": 1}
    info = await app.get_run(extraction_id)
    assert info.status is RunStatus.SUCCEEDED and info.input["source_run"] == "conv-1"
    assert info.session == "conv-1"  # the asking run's session (its own id: none given)


async def test_its_own_budget_stops_it_and_says_what_was_skipped(
    make: Callable[..., keel.App],
) -> None:
    app = make(llm=ScriptedModel(_facts, price_as="gpt-4o"))  # priced: it costs something
    long = "\n".join([TRANSCRIPT] * 40)  # several chunks
    extraction_id = await _extracted(app, long, budget=1e-9)
    items = await app.memory.extracts(extraction_id)
    assert items and items[-1].status == "skipped"
    assert "budget" in (items[-1].reason or "")
    assert {i.status for i in items} <= {"added", "duplicate", "invalid", "skipped"}


async def test_bad_input_is_refused_before_anything_is_started(
    make: Callable[..., keel.App],
) -> None:
    app = make(llm=ScriptedModel(_facts))
    for transcript, budget, problem in (
        ("   ", None, "extraction source is empty"),
        (TRANSCRIPT, -1.0, "max_cost_usd is a positive amount in USD, not -1.0"),
    ):
        run = await app.start("chat", {"transcript": transcript, "budget": budget})
        with pytest.raises(RunFailed, match=problem):
            await run.result(WAIT)
    runs = await app.list_runs(workflow=WORKFLOW)
    assert runs == []
