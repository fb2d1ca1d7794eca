"""The retrieval bench's generated dataset keeps its promises: the same on every run,
evidence that exists, paraphrase questions that share no content word with their
evidence (checked with a real FTS5 porter index), and dev/test splits apart. Plus the
keyword query's stopword rule in keel.memory.retrieval.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from keel.memory import retrieval

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from memory_data import build, content_terms


@pytest.fixture(scope="module")
def dev() -> object:
    return build("dev", quick=True)


def test_the_same_split_is_generated_every_time(dev: object) -> None:
    again = build("dev", quick=True)
    assert again.to_json() == dev.to_json()  # type: ignore[attr-defined]


def test_every_question_cites_existing_turns_of_its_own_persona(dev: object) -> None:
    turns = {t.id: t for t in dev.turns}  # type: ignore[attr-defined]
    kinds = set()
    for q in dev.questions:  # type: ignore[attr-defined]
        kinds.add(q.kind)
        assert q.evidence and all(turns[e].persona == q.persona for e in q.evidence)
        if q.kind == "multi":
            assert len({turns[e].session for e in q.evidence}) >= 2
    assert kinds == {"keyword", "paraphrase", "temporal", "multi"}


def test_a_paraphrase_shares_no_content_word_with_its_evidence(dev: object) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61')")
    turns = {t.id: t.text for t in dev.turns}  # type: ignore[attr-defined]
    paraphrases = [q for q in dev.questions if q.kind == "paraphrase"]  # type: ignore[attr-defined]
    assert paraphrases
    for q in paraphrases:
        db.execute("DELETE FROM t")
        db.executemany("INSERT INTO t(body) VALUES (?)", [(turns[e],) for e in q.evidence])
        query = " OR ".join(f'"{w}"' for w in content_terms(q.text))
        assert db.execute("SELECT 1 FROM t WHERE t MATCH ?", (query,)).fetchone() is None, q


def test_dev_and_test_are_different_people() -> None:
    dev, test = build("dev", quick=True), build("test", quick=True)
    assert not {t.text for t in dev.turns if "By the way" in t.text} & {
        t.text for t in test.turns if "By the way" in t.text
    }
    with pytest.raises(ValueError, match="unknown split 'train'"):
        build("train")


def test_the_keyword_query_leaves_stopwords_out_unless_nothing_else_is_left() -> None:
    assert retrieval.terms("What is the name of my dog?") == ["name", "dog"]
    assert retrieval.terms("who are you") == ["who", "are", "you"]
