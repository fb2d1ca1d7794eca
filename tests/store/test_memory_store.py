"""MemoryStore conformance: idempotent inserts, keyword candidates for any user text,
validity as of a time, index catch-up by seq, forget (a real delete, the full-text
index follows) and supersede (one transaction, idempotent), extraction statuses."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from keel.errors import Conflict, MemoryNotFound
from keel.store import MemoryExtract, MemoryNamespace, MemoryRow, Store

T0 = 1_700_000_000.0


def _row(mid: str, text: str, ns: str = "ns", **kw: Any) -> MemoryRow:
    vec = struct.pack("<3f", 1.0, 0.0, float(len(text)))
    fields: dict[str, Any] = {
        "id": mid,
        "namespace": ns,
        "text": text,
        "digest": f"d-{mid}",
        "embedder": "test",
        "vector": vec,
        "valid_from": T0,
        **kw,
    }
    return MemoryRow(**fields)


async def _ids(store: Store, ns: str, terms: list[str], as_of: float | None = None) -> list[str]:
    hits = await store.memory_keyword(ns, terms, as_of, 50)
    rows = {r.seq: r.id for r in await store.memory_rows(seqs=[h.seq for h in hits])}
    return [rows[h.seq] for h in hits]


async def test_insert_is_idempotent_by_id_and_reads_back(store: Store) -> None:
    rows = [
        _row("m1", "Ada prefers green tea", metadata={"who": "ada", "n": [1, 2]}),
        _row("m2", "Bob plays trumpet", context="said on Monday"),
    ]
    assert await store.memory_insert(rows) == ["m1", "m2"]
    changed = [_row("m1", "something else entirely"), _row("m3", "Carol reads")]
    assert await store.memory_insert(changed) == ["m3"]  # m1 stays as first written
    got = await store.memory_rows(ids=["m1", "m2", "m3", "missing"])
    assert [r.id for r in got] == ["m1", "m2", "m3"]
    assert got[0].text == "Ada prefers green tea"
    assert got[0].metadata == {"who": "ada", "n": [1, 2]}
    assert got[1].context == "said on Monday"
    assert got[0].vector == rows[0].vector and got[0].seq < got[1].seq < got[2].seq
    by_seq = await store.memory_rows(seqs=[got[2].seq], vectors=False)
    assert [(r.id, r.vector) for r in by_seq] == [("m3", None)]


async def test_keyword_search_stems_ranks_and_keeps_to_its_namespace(store: Store) -> None:
    await store.memory_insert(
        [
            _row("m1", "Ada prefers green tea"),
            _row("m2", "The teas of Assam are strong; tea tea tea"),
            _row("m3", "Bob plays trumpet"),
            _row("o1", "tea in another namespace", ns="other"),
        ]
    )
    found = await _ids(store, "ns", ["tea"])
    assert set(found) == {"m1", "m2"} and found[0] == "m2"  # stemmed: teas matches
    assert await _ids(store, "ns", ["trumpets", "nothing"]) == ["m3"]  # any term matches
    assert await _ids(store, "other", ["tea"]) == ["o1"]
    assert await store.memory_keyword("ns", [], None, 10) == []
    assert await store.memory_keyword("ns", ["tea"], None, 1) != []


@pytest.mark.parametrize(
    "term",
    [
        '"',
        "'",
        "tea\"'OR",
        "NOT",
        "AND",
        "OR",
        "*",
        "(",
        ")",
        "-",
        ":",
        "^",
        "NEAR",
        "\\",
        "a:b",
        "naïve",
        "日本語",
        "!",
        "&",
        "|",
        "<->",
        "''",
        '""',
        " ",
        "\x00x",
    ],
)
async def test_any_user_text_is_a_safe_term(store: Store, term: str) -> None:
    await store.memory_insert([_row("m1", "naïve tea party NOT AND OR near 日本語 a:b")])
    hits = await store.memory_keyword("ns", [term, "tea"], None, 10)  # never a syntax error
    assert [h.seq for h in hits] == [(await store.memory_rows(ids=["m1"]))[0].seq]


async def test_non_ascii_terms_match(store: Store) -> None:
    await store.memory_insert([_row("m1", "Der Kaffee ist heiß"), _row("m2", "Ça coûte cher")])
    assert await _ids(store, "ns", ["kaffee"]) == ["m1"]
    assert await _ids(store, "ns", ["coûte"]) == ["m2"]


async def test_vectors_after_a_seq_catch_an_index_up(store: Store) -> None:
    await store.memory_insert([_row(f"m{i}", f"fact {i}") for i in range(5)])
    first = await store.memory_vectors("ns", 0, 3)
    assert [e for _, e, _ in first] == ["test"] * 3 and all(v for _, _, v in first)
    rest = await store.memory_vectors("ns", first[-1][0], 100)
    assert len(rest) == 2 and rest[0][0] > first[-1][0]
    assert await store.memory_vectors("ns", rest[-1][0], 100) == []
    assert await store.memory_vectors("elsewhere", 0, 100) == []


async def test_forget_deletes_the_row_and_its_full_text_entry(store: Store) -> None:
    await store.memory_insert([_row("m1", "secret pin is 4921"), _row("m2", "pin codes")])
    assert await store.memory_forget("m1") is True
    assert await store.memory_forget("m1") is False
    assert await store.memory_rows(ids=["m1"]) == []
    assert await _ids(store, "ns", ["pin", "4921"]) == ["m2"]
    assert [r.id for r in await store.memory_list("ns")] == ["m2"]


async def test_forget_by_a_person_is_audited_without_the_text(store: Store) -> None:
    await store.memory_insert([_row("m1", "secret pin is 4921", ns="user:ada")])
    assert await store.memory_forget("m1", by="rita") is True
    assert await store.memory_forget("m1", by="rita") is False  # nothing to audit
    (entry,) = await store.audit_log("m1")
    assert (entry.actor, entry.action, entry.detail) == (
        "rita",
        "memory_forgotten",
        {"namespace": "user:ada"},
    )
    assert "4921" not in repr(entry)
    await store.memory_insert([_row("m2", "x")])
    await store.memory_forget("m2")  # a workflow's or the API's forget: no person
    assert await store.audit_log("m2") == []


async def test_namespaces_count_current_and_superseded_facts(store: Store) -> None:
    assert await store.memory_namespaces() == []
    await store.memory_insert(
        [
            _row("b1", "Bob plays trumpet", ns="user:bob", created_at=T0 + 5),
            _row("a1", "Ada lives in Paris", ns="user:ada", created_at=T0),
            _row("a2", "Ada likes tea", ns="user:ada", created_at=T0 + 1),
        ]
    )
    await store.memory_supersede(
        "a1", _row("a3", "Ada lives in Berlin", ns="user:ada", valid_from=T0 + 9, created_at=T0 + 9)
    )
    assert await store.memory_namespaces() == [
        MemoryNamespace("user:ada", current=2, superseded=1, last_added=T0 + 9),
        MemoryNamespace("user:bob", current=1, superseded=0, last_added=T0 + 5),
    ]
    assert [n.namespace for n in await store.memory_namespaces(limit=1)] == ["user:ada"]
    await store.memory_forget("b1")
    assert [n.namespace for n in await store.memory_namespaces()] == ["user:ada"]


async def test_supersede_closes_the_old_fact_in_one_transaction(store: Store) -> None:
    await store.memory_insert([_row("m1", "Ada lives in Paris")])
    new = _row("m2", "Ada lives in Berlin", valid_from=T0 + 100)
    closed = await store.memory_supersede("m1", new)
    assert (closed.id, closed.valid_to, closed.superseded_by) == ("m1", T0 + 100, "m2")
    assert await _ids(store, "ns", ["lives"]) == ["m2"]  # current facts only
    assert await _ids(store, "ns", ["lives"], as_of=T0 + 50) == ["m1"]
    assert await _ids(store, "ns", ["lives"], as_of=T0 + 100) == ["m2"]
    assert await _ids(store, "ns", ["lives"], as_of=T0 - 1) == []
    assert [r.id for r in await store.memory_list("ns")] == ["m2"]
    assert [r.id for r in await store.memory_list("ns", current=False)] == ["m1", "m2"]
    again = await store.memory_supersede("m1", new)  # a re-executed supersede
    assert again.superseded_by == "m2"
    assert len(await store.memory_list("ns", current=False)) == 2


async def test_supersede_refuses_unknown_and_already_closed_facts(store: Store) -> None:
    await store.memory_insert([_row("m1", "Ada lives in Paris")])
    with pytest.raises(MemoryNotFound, match="'nope'"):
        await store.memory_supersede("nope", _row("m9", "x"))
    assert await store.memory_rows(ids=["m9"]) == []  # nothing written
    await store.memory_supersede("m1", _row("m2", "Ada lives in Berlin", valid_from=T0 + 1))
    with pytest.raises(Conflict, match="superseded already"):
        await store.memory_supersede("m1", _row("m3", "Ada lives in Rome", valid_from=T0 + 2))
    assert await store.memory_rows(ids=["m3"]) == []


async def test_a_failed_supersede_leaves_the_old_fact_open(store: Store) -> None:
    await store.memory_insert([_row("m1", "Ada lives in Paris"), _row("m2", "taken id")])
    with pytest.raises(Conflict, match="'m2' is taken"):  # the close is rolled back with it
        await store.memory_supersede("m1", _row("m2", "Ada lives in Berlin", valid_from=T0 + 1))
    (old,) = await store.memory_rows(ids=["m1"])
    assert (old.valid_to, old.superseded_by) == (None, None)
    assert (await store.memory_rows(ids=["m2"]))[0].text == "taken id"


async def test_list_pages_by_seq(store: Store) -> None:
    await store.memory_insert([_row(f"m{i}", f"fact {i}") for i in range(5)])
    page = await store.memory_list("ns", limit=2)
    nxt = await store.memory_list("ns", after_seq=page[-1].seq, limit=10)
    assert [r.id for r in page + nxt] == [f"m{i}" for i in range(5)]
    assert all(r.vector is None for r in page)


async def test_extraction_statuses_upsert_by_run_and_item(store: Store) -> None:
    await store.memory_extract_put(
        [
            MemoryExtract("r1", 1, "ns", "likes tea", "pending", updated_at=T0),
            MemoryExtract("r1", 0, "ns", "lives in Paris", "pending", updated_at=T0),
        ]
    )
    await store.memory_extract_put(
        [MemoryExtract("r1", 1, "ns", "likes tea", "added", memory_id="m7", updated_at=T0 + 1)]
    )
    got = await store.memory_extracts("r1")
    assert [(e.item, e.status, e.memory_id) for e in got] == [
        (0, "pending", None),
        (1, "added", "m7"),
    ]
    assert await store.memory_extracts("r2") == []
