"""Memory hits and session reads in traces: the spans of MEMORY and SESSION steps carry
what a search asked (its query only when the workflow keeps trace content), its hits'
ids and scores, the ids a write made and the key a session step used; a resumed run
describes each step once, as its first attempt saw it; `keel trace` and `keel show`
print them in one line each.

The embedder is tests/memory_embedders.py's hashed words: these tests are about
plumbing, not about which memories are relevant."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from typer.testing import CliRunner

import keel
from keel.cli import cli
from keel.engine.runtime import Settings
from keel.observe.spans import CONTENT_ATTRIBUTES, SpanRow
from keel.types import RunStatus
from tests.limits import WAIT
from tests.memory_embedders import HashedWords


@pytest.fixture
async def make_app(store_url: str) -> AsyncIterator[Callable[[], keel.App]]:
    apps: list[keel.App] = []

    def make() -> keel.App:
        settings = Settings(poll_interval=0.02)
        apps.append(keel.App(store_url, embedder=HashedWords(), settings=settings))
        return apps[-1]

    yield make
    for app in apps:
        await app.close()


def _by_key(spans: list[SpanRow]) -> dict[str, SpanRow]:
    return {s.attributes["keel.step.key"]: s for s in spans if "keel.step.key" in s.attributes}


def _assistant(app: keel.App, *, content: bool = True) -> Any:
    @app.workflow(trace_content=content)
    async def assistant(ctx: keel.Context, question: str) -> list[str]:
        await ctx.session.set("topic", "tea")
        topic = await ctx.session.get("topic")
        await ctx.session.get("missing")
        mid = await ctx.memory.add(f"Ada likes {topic}", namespace="user:ada")
        hits = await ctx.memory.search(question, namespace="user:ada", k=3, min_relevance=0.1)
        await ctx.wait_for("go")  # the run suspends: the next execution replays all above
        await ctx.memory.forget(mid)
        return [h.id for h in hits]

    return assistant


async def test_memory_and_session_spans_say_what_was_asked_found_and_written(
    make_app: Callable[[], keel.App],
) -> None:
    app = make_app()
    await app.memory.add("Ada likes tea a lot", namespace="user:ada")
    handle = await app.start(_assistant(app), {"question": "what tea does Ada like"})
    assert (await handle.settle(WAIT)).status is RunStatus.WAITING
    await handle.signal("go", True)
    hit_ids = await handle.result(WAIT)
    spans = await app.trace(handle.id)

    keys = Counter(s.attributes["keel.step.key"] for s in spans if "keel.step.key" in s.attributes)
    assert keys["memory.search#0"] == 1 and keys["session.get#1"] == 1  # once, resumed or not
    by_key = _by_key(spans)
    search = by_key["memory.search#0"].attributes
    assert search["keel.memory.operation"] == "search"
    assert search["keel.memory.namespace"] == "user:ada"
    assert search["keel.memory.query"] == "what tea does Ada like"
    assert (search["keel.memory.k"], search["keel.memory.min_relevance"]) == (3, 0.1)
    assert search["keel.memory.hits"] == hit_ids and len(hit_ids) == 2
    scores = search["keel.memory.scores"]
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores) and scores == sorted(scores)[::-1]

    added = by_key["memory.add#0"].attributes
    assert added["keel.memory.ids"][0] in hit_ids and added["keel.memory.count"] == 1
    assert by_key["memory.forget#0"].attributes["keel.memory.ids"] == added["keel.memory.ids"]
    assert by_key["session.set#0"].attributes["keel.session.key"] == "topic"
    assert by_key["session.set#0"].attributes["keel.session.applied"] is True
    assert by_key["session.get#0"].attributes["keel.session.found"] is True
    assert by_key["session.get#1"].attributes["keel.session.key"] == "missing"
    assert by_key["session.get#1"].attributes["keel.session.found"] is False
    assert by_key["session.get#0"].attributes["keel.session.id"] == handle.id
    assert await app.trace(handle.id) == spans  # the same on every read


async def test_without_trace_content_a_search_span_has_no_query(
    make_app: Callable[[], keel.App],
) -> None:
    app = make_app()
    handle = await app.start(_assistant(app, content=False), {"question": "secret question"})
    await handle.settle(WAIT)
    await handle.signal("go", True)
    await handle.result(WAIT)
    search = _by_key(await app.trace(handle.id))["memory.search#0"].attributes
    assert "keel.memory.query" not in search and "keel.memory.query" in CONTENT_ATTRIBUTES
    assert search["keel.memory.k"] == 3 and isinstance(search["keel.memory.hits"], list)
    assert "secret question" not in repr(search)


async def test_keel_trace_and_keel_show_print_hits_and_keys(
    make_app: Callable[[], keel.App], store_url: str
) -> None:
    app = make_app()
    handle = await app.start(_assistant(app), {"question": "what does Ada like"})
    await handle.settle(WAIT)
    await handle.signal("go", True)
    [hit] = await handle.result(WAIT)
    await app.close()

    def invoke(*args: str) -> str:
        env = {"KEEL_STORE": store_url, "COLUMNS": "300", "NO_COLOR": "1"}
        res = CliRunner().invoke(cli, list(args), env=env)
        assert res.exit_code == 0, res.output
        return res.stdout

    for out in (
        await asyncio.to_thread(invoke, "trace", handle.id),
        await asyncio.to_thread(invoke, "show", handle.id),
    ):
        assert f"search in user:ada 'what does Ada like' k=3 ≥0.1 → {hit} " in out
        assert "session get 'topic' → found" in out
        assert "session get 'missing' → absent" in out
        assert f"add in user:ada → {hit}" in out
