"""The console's Memory pages: the namespaces with their counts, a namespace's memories
(paged, superseded facts with their validity, the run that wrote one linked), a search
showing each hit's relevance with a min-relevance floor, an extraction run's items with
their statuses, and forgetting from the console (reviewer or admin, CSRF, audited).

The embedder is tests/memory_embedders.py's hashed words: these pages show what search
returns; they claim nothing about retrieval quality (tests/test_memory.py does, with
MiniLM)."""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import keel
from keel.engine.runtime import Settings
from keel.llm import ScriptedModel
from keel.memory.extract import WORKFLOW
from keel.server.app import create_app
from keel.server.auth import add_user
from tests.limits import WAIT
from tests.memory_embedders import HashedWords
from tests.services.pages import csrf_of, element, sign_in


def table(page: str, table_id: str) -> str:
    found = re.search(rf'<table id="{table_id}".*?</table>', page, re.S)
    assert found, f"no table #{table_id}"
    return html.unescape(found.group(0))


def rows(page: str, table_id: str) -> list[str]:
    return re.findall(r"<tr data-[^>]*>.*?</tr>", table(page, table_id), re.S)


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[keel.App]:
    made = keel.App(
        store_url,
        settings=Settings(poll_interval=0.02),
        embedder=HashedWords(),
        llm=ScriptedModel(default='{"facts": ["Ada moved to Lisbon", "  "]}'),
    )

    @made.workflow(name="remember")
    async def remember(ctx: keel.Context, fact: str) -> str:
        return await ctx.memory.add(fact, namespace="user:ada", metadata={"via": "chat"})

    @made.workflow(name="chat")
    async def chat(ctx: keel.Context, transcript: str) -> str:
        return await ctx.memory.extract(transcript, namespace="user:ada")

    yield made
    await made.close()


@contextlib.asynccontextmanager
async def client(app: keel.App, role: str) -> AsyncIterator[httpx.AsyncClient]:
    """A signed-in console client for a new user of `role`."""
    server = create_app(app, secure_cookies=False)
    token = await add_user(app.store, f"{role}-1", role, [])
    transport = httpx.ASGITransport(app=server, client=("10.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as c:
        await sign_in(c, token)
        yield c


async def test_namespaces_memories_validity_and_source_runs(app: keel.App) -> None:
    old = await app.memory.add("Ada lives in Paris", namespace="user:ada")
    new = await app.memory.supersede(old, "Ada lives in Berlin")
    run = await app.start("remember", {"fact": "Ada likes green tea"})
    written = await run.result(WAIT)
    await app.memory.add("Bob plays trumpet", namespace="team/bob")  # a '/' in a namespace
    async with client(app, "viewer") as c:
        assert (await c.get("/memory")).status_code == 200
        listing = (await c.get("/memory")).text
        spaces = rows(listing, "namespaces")
        assert len(spaces) == 2 and "team/bob" in spaces[0] and "user:ada" in spaces[1]
        assert 'href="/memory/team%2Fbob"' in spaces[0]
        assert re.search(r'class="current">2<.*class="superseded">1<', spaces[1], re.S)

        page = (await c.get("/memory/user%3Aada")).text
        assert element(page, "namespace") == "user:ada"
        mems = {
            re.search(r'data-memory-id="([^"]+)"', r).group(1): r for r in rows(page, "memories")
        }  # type: ignore[union-attr]
        assert list(mems) == [old, new, written]
        assert (
            'class="superseded"' in mems[old] and f"superseded by <code>{new}</code>" in mems[old]
        )
        assert "until" in mems[old] and "until" not in mems[new]
        assert f'href="/runs/{run.id}"' in mems[written]  # the run that wrote it
        assert '{"via": "chat"}' in html.unescape(mems[written])
        assert "Forget" not in page  # a viewer reads, never forgets
        run_page = (await c.get(f"/runs/{run.id}")).text  # the trace names what it wrote
        assert f'<span class="span-memory">add in user:ada → {written}</span>' in run_page
        current = (await c.get("/memory/user%3Aada?current=true")).text
        assert old not in table(current, "memories")
        bob = (await c.get("/memory/team%2Fbob")).text
        assert "Bob plays trumpet" in table(bob, "memories")
        empty = (await c.get("/memory/nobody")).text
        assert "holds no memories" in element(empty, "memories-empty")


async def test_pages_of_memories_follow_each_other(app: keel.App) -> None:
    from keel.server.web.memory import PAGE

    ids = await app.memory.add_many([f"fact {i}" for i in range(PAGE + 3)], namespace="n")
    async with client(app, "viewer") as c:
        first = (await c.get("/memory/n")).text
        assert len(rows(first, "memories")) == PAGE
        nxt = re.search(r'id="next-page" href="([^"]+)"', first)
        assert nxt
        second = (await c.get(html.unescape(nxt.group(1)))).text
        assert [ids[-3:] == re.findall(r'data-memory-id="([^"]+)"', table(second, "memories"))]
        assert "next-page" not in second and "first-page" in second


async def test_search_shows_relevance_and_a_floor_keeps_only_relevant_hits(app: keel.App) -> None:
    await app.memory.add_many(
        ["Ada prefers green tea", "Ada has a dog", "quarterly report due"], namespace="user:ada"
    )
    async with client(app, "viewer") as c:
        page = (await c.get("/memory/user%3Aada", params={"q": "green tea", "k": 2})).text
        hits = rows(page, "hits")
        assert len(hits) == 2 and "Ada prefers green tea" in hits[0]
        scores = [float(s) for s in re.findall(r"</meter> ([0-9.]+)", table(page, "hits"))]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        exact = await app.memory.search("green tea", namespace="user:ada", k=2)
        assert scores == [round(h.score, 2) for h in exact]
        floor = (exact[0].score + exact[1].score) / 2  # only the best one passes
        page = (
            await c.get("/memory/user%3Aada", params={"q": "green tea", "min_relevance": floor})
        ).text
        assert len(rows(page, "hits")) == 1
        none = (await c.get("/memory/user%3Aada", params={"q": "zebra", "min_relevance": 1})).text
        assert "No memory is at least 1 relevant" in element(none, "hits-empty")
        assert len(rows(none, "memories")) == 3  # the namespace is still listed below

        bad = await c.get("/memory/user%3Aada", params={"q": "tea", "min_relevance": "high"})
        assert bad.status_code == 422
        assert "not a number from 0 to 1" in element(bad.text, "err-min_relevance")
        assert 'value="high"' in bad.text  # what was typed stays in the form
        big = await c.get("/memory/user%3Aada", params={"q": "tea", "k": 500})
        assert big.status_code == 422 and "from 1 to 50" in element(big.text, "err-k")
        blank = await c.get("/memory/user%3Aada", params={"q": " \n "})
        assert blank.status_code == 200 and "hits" not in re.findall(r'id="(hits)"', blank.text)
        unknown = await c.get("/memory/user%3Aada", params={"query": "tea"})
        assert unknown.status_code == 422  # a mistyped parameter is refused, not ignored


async def test_an_extraction_runs_items_and_their_statuses(app: keel.App) -> None:
    extraction_id = await (await app.start("chat", {"transcript": "user: I moved"})).result(WAIT)
    await app.handle(extraction_id, WORKFLOW).result(WAIT)
    async with client(app, "viewer") as c:
        run_page = (await c.get(f"/runs/{extraction_id}")).text
        link = re.search(r'id="run-extraction" href="([^"]+)"', run_page)
        assert link
        page = (await c.get(html.unescape(link.group(1)))).text
        items = rows(page, "extracted")
        assert len(items) == 2
        assert "added" in items[0] and "Ada moved to Lisbon" in items[0] and "mem_" in items[0]
        assert "invalid" in items[1] and "empty" in items[1]
        assert "added 1" in page and "invalid 1" in page
        missing = await c.get("/memory/extractions/nope")
        assert missing.status_code == 404 and "no extraction run 'nope'" in html.unescape(
            missing.text
        )
        asking = (await app.get_run(extraction_id)).input["source_run"]
        other = await c.get(f"/memory/extractions/{asking}")
        assert other.status_code == 200
        assert "is a <code>chat</code> run, not a memory extraction" in other.text


async def test_forgetting_needs_a_reviewer_and_csrf_and_is_audited(app: keel.App) -> None:
    keep = await app.memory.add("Ada likes tea", namespace="user:ada")
    gone = await app.memory.add("Ada's PIN is 4921", namespace="user:ada")
    async with client(app, "viewer") as c:
        page = (await c.get("/memory/user%3Aada")).text
        form: dict[str, Any] = {"csrf": csrf_of(page), "memory_id": gone}
        refused = await c.post("/memory/user%3Aada/forget", data=form)
        assert refused.status_code == 403 and "needs a reviewer" in refused.text
    async with client(app, "reviewer") as c:
        page = (await c.get("/memory/user%3Aada")).text
        assert page.count(">Forget</button>") == 2
        no_csrf = await c.post("/memory/user%3Aada/forget", data={"memory_id": gone})
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
        elsewhere = await c.post(
            "/memory/user%3Abob/forget", data={"csrf": csrf_of(page), "memory_id": gone}
        )
        assert elsewhere.status_code == 404  # the id must be of the namespace on the page
        done = await c.post(
            "/memory/user%3Aada/forget", data={"csrf": csrf_of(page), "memory_id": gone}
        )
        assert done.status_code == 303 and done.headers["location"] == "/memory/user%3Aada"
        again = await c.post(
            "/memory/user%3Aada/forget", data={"csrf": csrf_of(page), "memory_id": gone}
        )
        assert again.status_code == 404
    assert [m.id for m in await app.memory.list(namespace="user:ada")] == [keep]
    (entry,) = await app.store.audit_log(gone)
    assert (entry.actor, entry.action) == ("reviewer-1", "memory_forgotten")


async def test_the_rest_api_reads_namespaces_memories_searches_and_extractions(
    app: keel.App,
) -> None:
    old = await app.memory.add("Ada lives in Paris", namespace="user:ada")
    new = await app.memory.supersede(old, "Ada lives in Berlin")
    extraction_id = await (await app.start("chat", {"transcript": "user: I moved"})).result(WAIT)
    await app.handle(extraction_id, WORKFLOW).result(WAIT)
    token = await add_user(app.store, "vera", "viewer", [])
    transport = httpx.ASGITransport(app=create_app(app, secure_cookies=False))
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://keel.test/api/v1", headers=headers
    ) as c:
        spaces = (await c.get("/memory")).json()
        assert spaces == [
            {"namespace": "user:ada", "current": 2, "superseded": 1, "last_added": ANY_TIME}
        ]
        listed = (await c.get("/memory/user%3Aada", params={"limit": 2})).json()
        assert [m["id"] for m in listed["memories"]][:2] == [old, new]
        assert listed["memories"][0]["superseded_by"] == new and listed["next_after"]
        rest = (await c.get("/memory/user%3Aada", params={"after": listed["next_after"]})).json()
        assert len(rest["memories"]) == 1 and rest["next_after"] is None
        hits = (await c.get("/memory/user%3Aada/search", params={"q": "Ada lives"})).json()
        assert hits[0]["id"] == new and 0 <= hits[0]["score"] <= 1
        assert old not in [h["id"] for h in hits]  # superseded facts are not current
        none = await c.get("/memory/user%3Aada/search", params={"q": "x", "min_relevance": 1})
        assert none.json() == []
        bad = await c.get("/memory/user%3Aada/search", params={"q": "x", "min_relevance": 2})
        assert bad.status_code == 422
        blank = await c.get("/memory/user%3Aada/search", params={"q": "   "})
        assert blank.status_code == 422 and "empty" in blank.json()["detail"]
        items = (await c.get(f"/memory/extractions/{extraction_id}")).json()["items"]
        assert [i["status"] for i in items] == ["added", "invalid"]
        assert (await c.post("/memory/user%3Aada/search")).status_code in (403, 405)
        signed_out = await c.get("/memory", headers={"Authorization": ""})
        assert signed_out.status_code == 401


class _AnyTime(float):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and other > 1e9

    __hash__ = float.__hash__


ANY_TIME = _AnyTime(0)
