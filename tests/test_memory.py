"""Long-term memory through `app.memory` with the real local MiniLM: related queries find
their facts, unrelated ones find nothing above a threshold, as_of sees superseded facts,
forget removes from both retrievers, and bad input is refused before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import keel
from keel.errors import ConfigError, Conflict, MemoryNotFound
from keel.memory import Memory, MemoryHit
from tests.memory_embedders import HashedWords

FACTS = [
    "Ada prefers green tea in the morning",
    "Ada's dog is called Biscuit",
    "The quarterly report is due on Friday",
    "Bob plays the trumpet in a jazz band",
    "Ada is allergic to peanuts",
    "The office wifi password changed last week",
]
# Relevance is calibrated on conversations full of near misses (keel/memory/retrieval.py):
# there 0.5 keeps 71% of right answers. These one-line facts with MiniLM: a related
# query's cosine is 0.44-0.65 (relevance 0.41-0.86), an unrelated one's at most 0.12 (0.02).
THRESHOLD = 0.35


@pytest.fixture
async def make_app(store_url: str) -> AsyncIterator[Callable[..., keel.App]]:
    """Apps on this test's store (`embedder=` passed on); closed at teardown."""
    apps: list[keel.App] = []

    def make(**kw: Any) -> keel.App:
        apps.append(keel.App(store_url, **kw))
        return apps[-1]

    yield make
    for app in apps:
        await app.close()


@pytest.fixture
async def memory(make_app: Callable[..., keel.App]) -> Memory:
    mem = make_app().memory
    await mem.add_many(FACTS, namespace="ada")
    return mem


async def _texts(mem: Memory, query: str, **kw: object) -> list[str]:
    return [h.text for h in await mem.search(query, namespace="ada", **kw)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "fact"),
    [
        ("What does Ada like to drink?", FACTS[0]),
        ("what is the name of the pet?", FACTS[1]),
        ("when must the report be handed in", FACTS[2]),
        ("who is a musician", FACTS[3]),
        ("food allergy", FACTS[4]),
    ],
)
async def test_a_related_query_finds_its_fact_first_above_the_threshold(
    memory: Memory, query: str, fact: str
) -> None:
    hits = await memory.search(query, namespace="ada", k=3, min_relevance=THRESHOLD)
    assert hits and hits[0].text == fact
    assert all(isinstance(h, MemoryHit) and 0 <= h.score <= 1 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize(
    "query",
    ["how do I change a car tyre", "quantum chromodynamics on a lattice", "recipe for lasagne"],
)
async def test_an_unrelated_query_finds_nothing_above_the_threshold(
    memory: Memory, query: str
) -> None:
    assert await memory.search(query, namespace="ada", min_relevance=THRESHOLD) == []
    unfiltered = await memory.search(query, namespace="ada", k=3)
    assert len(unfiltered) == 3 and max(h.score for h in unfiltered) < THRESHOLD


async def test_scores_compare_across_queries(memory: Memory) -> None:
    related = await memory.search("Ada's favourite drink", namespace="ada", k=1)
    unrelated = await memory.search("car tyre repair", namespace="ada", k=1)
    assert related[0].score > 0.8 > 0.2 > unrelated[0].score


async def test_namespaces_are_separate(memory: Memory) -> None:
    assert await memory.search("green tea", namespace="bob") == []
    await memory.add("Bob drinks black coffee", namespace="bob")
    assert await _texts(memory, "coffee", k=1) != ["Bob drinks black coffee"]


async def test_metadata_filter_and_context(memory: Memory) -> None:
    ids = await memory.add_many(
        [
            {
                "text": "I moved to Lisbon",
                "context": "Carol, 2024-03-01",
                "metadata": {"who": "carol"},
            },
            {"text": "I moved to Oslo", "context": "Dan, 2024-05-01", "metadata": {"who": "dan"}},
        ],
        namespace="ada",
    )
    hits = await memory.search("where did Carol move?", namespace="ada", k=2)
    assert hits[0].id == ids[0] and hits[0].metadata == {"who": "carol"}
    assert "Carol" not in hits[0].text  # context is searched, never returned
    only_dan = await memory.search("moved", namespace="ada", filter={"who": "dan"})
    assert [h.id for h in only_dan] == [ids[1]]


async def test_supersede_keeps_the_old_fact_as_of_before(memory: Memory) -> None:
    old = await memory.add("Ada lives in Paris", namespace="ada")
    before = datetime.now(UTC)
    new = await memory.supersede(old, "Ada lives in Berlin")
    now = await memory.search("where does Ada live?", namespace="ada", k=1)
    assert [h.id for h in now] == [new]
    then = await memory.search("where does Ada live?", namespace="ada", k=1, as_of=before)
    assert [h.text for h in then] == ["Ada lives in Paris"]
    with pytest.raises(Conflict, match="superseded already"):
        await memory.supersede(old, "Ada lives in Rome")
    assert (await memory.get(new)).text == "Ada lives in Berlin"


async def test_forget_removes_from_keyword_and_vector_results(memory: Memory) -> None:
    mid = await memory.add("The vault code is 4921-zebra", namespace="ada")
    assert (await memory.search("vault code", namespace="ada", k=1))[0].id == mid
    await memory.forget(mid)
    for query in ("vault code 4921 zebra", "secret combination for the safe"):
        assert mid not in [h.id for h in await memory.search(query, namespace="ada", k=10)]
    assert mid not in [r.id for r in await memory.list(namespace="ada")]
    with pytest.raises(MemoryNotFound, match="forgotten"):
        await memory.forget(mid)
    with pytest.raises(MemoryNotFound):
        await memory.supersede(mid, "new code")


async def test_bad_input_is_refused_before_anything_is_written(memory: Memory) -> None:
    before = await memory.list(namespace="ada", limit=1000)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: memory.add("   "), "empty or only whitespace"),
        (lambda: memory.add(""), "empty"),
        (lambda: memory.add(3), "must be a string"),  # type: ignore[arg-type]
        (lambda: memory.add("x", metadata={"at": datetime.now(UTC)}), "plain JSON"),
        (lambda: memory.add("x", metadata={"n": float("nan")}), "plain JSON"),
        (lambda: memory.add("x", namespace=""), "namespace"),
        (lambda: memory.add_many(["fine", " "], namespace="ada"), "item 1"),
        (lambda: memory.add_many("one string"), "list of items"),  # type: ignore[arg-type]
        (lambda: memory.add_many([{"txt": "x"}]), "unknown keys"),
        (lambda: memory.search("q", k=0), "k must be"),
        (lambda: memory.search("q", min_relevance=2), "min_relevance"),
        (lambda: memory.search("  "), "search query"),
        (lambda: memory.search("q", as_of=datetime(2024, 1, 1)), "timezone-aware"),
        (lambda: memory.search("q", filter=["x"]), "filter"),  # type: ignore[arg-type]
    ]
    for call, message in cases:
        with pytest.raises(ConfigError, match=message):
            await call()  # type: ignore[misc]
    assert await memory.list(namespace="ada", limit=1000) == before


async def test_the_index_catches_up_with_another_process_adding(
    make_app: Callable[..., keel.App],
) -> None:
    reader, writer = make_app().memory, make_app().memory  # two Apps: two indexes
    await writer.add("Zed collects vintage maps")
    assert [h.text for h in await reader.search("old cartography hobby", k=1)] == [
        "Zed collects vintage maps"
    ]
    await writer.add("Zed sails on weekends")
    assert (await reader.search("boating", k=1))[0].text == "Zed sails on weekends"


async def test_a_search_with_another_embedder_says_so(
    make_app: Callable[..., keel.App],
) -> None:
    await make_app(embedder=HashedWords()).memory.add("Ada prefers tea")
    other = make_app().memory  # the local MiniLM
    with pytest.raises(ConfigError, match=r"test:hashed-words.*cannot be compared"):
        await other.search("tea")


def test_an_embedder_brings_its_own_calibration() -> None:
    from keel.embed import LiteLLMEmbedder
    from keel.memory import retrieval

    c = retrieval.Candidate(seq=1, cosine=0.5, vector_rank=0)
    assert retrieval.calibration_of(HashedWords()) == retrieval.MINILM
    mine = LiteLLMEmbedder("openai/text-embedding-3-small", calibration=(20.0, -10.0))
    assert retrieval.relevance(c, retrieval.calibration_of(mine)) == pytest.approx(0.5)
    assert retrieval.relevance(c) == pytest.approx(1 / (1 + math.exp(-(11.074 * 0.5 - 5.291))))
