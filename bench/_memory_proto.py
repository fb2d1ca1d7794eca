"""Retrieval prototype on the bench data, built like keel/memory's search.

Memories are (turn id, text, context); the keyword side is SQLite FTS5 (porter) over
text and context, the vector side the cosine of the query to embed(context + text),
exactly as `keel.memory.Memory` stores and embeds them; candidates get the features
`keel.memory.retrieval.Candidate` has. That makes it fast to try ingestion variants
(what a memory is, what its context holds) and to fit the relevance coefficients on
the dev split, then check them through `app.memory` on the test split.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from _memory_embed import embed
from memory_data import Dataset, Question, Turn, content_terms

Ranker = Callable[[Question], list[str]]
POOL = 50


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?:])\s+", text) if s]


def fts_query(text: str) -> str:
    """OR of the question's content words: a well-configured keyword query."""
    return " OR ".join(f'"{w}"' for w in content_terms(text))


@dataclass(frozen=True)
class Item:
    turn: int  # index into the split's turns
    text: str
    context: str | None


def ingest(turns: list[Turn], variant: str) -> list[Item]:
    """The memories one conversation becomes, per ingestion `variant`:

    - `turn`: each turn as it is (the naive way);
    - `turn+prev`: each turn, with the previous turn of its session as context;
    - `turn+who`: each turn, with its date and speaker as context;
    - `sentence`: each sentence of each turn, no context;
    - `sentence+who`: each sentence of each turn, its date and speaker as context;
    - `sentence+turn`: each sentence, with its date, speaker and whole turn as context.
    """
    out: list[Item] = []
    for i, t in enumerate(turns):
        who = f"{t.date} {t.speaker}"
        if variant == "turn":
            out.append(Item(i, t.text, None))
        elif variant == "turn+who":
            out.append(Item(i, t.text, who))
        elif variant == "turn+prev":
            prev = turns[i - 1] if i and turns[i - 1].session == t.session else None
            out.append(Item(i, t.text, f"{prev.speaker}: {prev.text}" if prev else None))
        elif variant == "sentence":
            out += [Item(i, s, None) for s in sentences(t.text)]
        elif variant == "sentence+who":
            out += [Item(i, s, who) for s in sentences(t.text)]
        elif variant == "sentence+turn":
            # The whole turn (when it has more than this sentence) and who said it, when.
            ctx = who if sentences(t.text) == [t.text] else f"{who}: {t.text}"
            out += [Item(i, s, ctx) for s in sentences(t.text)]
        else:
            raise ValueError(f"unknown ingestion variant {variant!r}")
    return out


def embedded(item: Item) -> str:
    return item.text if not item.context else f"{item.context}\n{item.text}"


@dataclass
class Cand:
    item: int
    cosine: float
    keyword_rank: int | None
    keyword_score: float | None
    vector_rank: int | None


class Corpus:
    """One split, ingested one way, searchable like `app.memory.search`."""

    def __init__(self, data: Dataset, variant: str, embedder: str = "minilm",
                 stopwords: bool = True, embed_context: bool = True) -> None:
        self.data, self.variant, self.stopwords = data, variant, stopwords
        self.turns = data.turns
        self.items: list[Item] = []
        self.by_persona: dict[str, list[int]] = {}
        for p in data.personas():
            ix = [i for i, t in enumerate(self.turns) if t.persona == p]
            base = ix[0]
            conv = [self.turns[i] for i in ix]
            start = len(self.items)
            self.items += [Item(it.turn + base, it.text, it.context)
                           for it in ingest(conv, variant)]
            self.by_persona[p] = list(range(start, len(self.items)))
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE m USING fts5(text, context, persona UNINDEXED, "
                        "tokenize='porter unicode61')")
        self.db.executemany("INSERT INTO m(rowid, text, context, persona) VALUES (?, ?, ?, ?)",
                            [(n, it.text, it.context, self.turns[it.turn].persona)
                             for n, it in enumerate(self.items)])
        # Keel embeds context + text; `embed_context=False` tries the text alone.
        self.vec = embed(embedder, [embedded(it) if embed_context else it.text
                                    for it in self.items])
        self.qvec = dict(zip([q.id for q in data.questions],
                             embed(embedder, [q.text for q in data.questions]), strict=True))

    def keyword(self, q: Question, limit: int = POOL) -> list[tuple[int, float]]:
        words = content_terms(q.text) if self.stopwords else \
            list(dict.fromkeys(re.findall(r"\w+", q.text.lower())))
        if not words:
            return []
        query = " OR ".join(f'"{w}"' for w in words)
        rows = self.db.execute(
            "SELECT rowid, -bm25(m) FROM m WHERE m MATCH ? AND persona = ? "
            "ORDER BY bm25(m) LIMIT ?", (query, q.persona, limit)).fetchall()
        return [(int(r), float(s)) for r, s in rows]

    def candidates(self, q: Question, pool: int = POOL) -> list[Cand]:
        ix = np.array(self.by_persona[q.persona])
        cos = self.vec[ix] @ self.qvec[q.id]
        order = ix[np.argsort(-cos)[:pool]]
        kw = self.keyword(q, pool)
        kw_rank = {n: (r, s) for r, (n, s) in enumerate(kw)}
        vec_rank = {int(n): r for r, n in enumerate(order)}
        out = []
        for n in dict.fromkeys([n for n, _ in kw] + [int(n) for n in order]):
            k = kw_rank.get(n)
            out.append(Cand(n, float(self.vec[n] @ self.qvec[q.id]),
                            None if k is None else k[0], None if k is None else k[1],
                            vec_rank.get(n)))
        return out

    def to_turns(self, ranked_items: list[int]) -> list[str]:
        """Item ranks to distinct turn ids, best first (a turn's best item counts)."""
        return list(dict.fromkeys(self.turns[self.items[n].turn].id for n in ranked_items))

    def rank_fts(self, q: Question) -> list[str]:
        return self.to_turns([n for n, _ in self.keyword(q)])

    def rank_vector(self, q: Question) -> list[str]:
        cands = self.candidates(q)
        return self.to_turns([c.item for c in sorted(cands, key=lambda c: -c.cosine)])


# --- features and the fitted score --------------------------------------------------

RRF_K = 60
FEATURES = ["cosine", "keyword", "rrf", "keyword_rel"]


def features(cands: list[Cand]) -> np.ndarray:
    top = max((c.keyword_score or 0.0 for c in cands), default=0.0) or 1.0
    rows = []
    for c in cands:
        rrf = sum(1.0 / (RRF_K + r + 1) for r in (c.keyword_rank, c.vector_rank)
                  if r is not None) / (2.0 / (RRF_K + 1))
        rows.append([c.cosine, 1.0 if c.keyword_rank is not None else 0.0, rrf,
                     (c.keyword_score or 0.0) / top])
    return np.array(rows, dtype=np.float64).reshape(len(cands), len(FEATURES))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 100,
                 balanced: bool = False) -> np.ndarray:
    """Logistic regression by Newton's method; returns [bias, w...]. `balanced`: both
    classes weigh the same in total (a 50/50 prior, whatever the sample's mix)."""
    xb = np.hstack([np.ones((len(x), 1)), x])
    sw = np.ones(len(y))
    if balanced:
        sw = np.where(y > 0, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9))
    w = np.zeros(xb.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(xb @ w)))
        grad = xb.T @ (sw * (p - y)) + l2 * np.r_[0, w[1:]]
        h = (xb * (sw * p * (1 - p))[:, None]).T @ xb + l2 * np.eye(len(w))
        step = np.linalg.solve(h, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return w


def training_rows(corpus: Corpus, use: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate of every dev question: features, and 1 if it is evidence."""
    xs, ys = [], []
    for q in corpus.data.questions:
        cands = corpus.candidates(q)
        ev = set(q.evidence)
        xs.append(features(cands)[:, use])
        ys.append(np.array([1.0 if corpus.turns[corpus.items[c.item].turn].id in ev else 0.0
                            for c in cands]))
    return np.vstack(xs), np.concatenate(ys)


def rank_weighted(corpus: Corpus, w: np.ndarray, use: list[int]) -> Ranker:
    def rank(q: Question) -> list[str]:
        cands = corpus.candidates(q)
        s = w[0] + features(cands)[:, use] @ w[1:]
        return corpus.to_turns([cands[j].item for j in np.argsort(-s, kind="stable")])
    return rank


def hit_rates(
    data: Dataset, rank: Ranker, ks: tuple[int, ...] = (5, 10)
) -> dict[str, dict[str, float]]:
    """Per kind and overall: the share (%) of questions with an evidence turn in the top k."""
    out: dict[str, dict[str, list[bool]]] = {}
    for q in data.questions:
        ranked = rank(q)
        ev = set(q.evidence)
        for kind in (q.kind, "all"):
            for k in ks:
                out.setdefault(kind, {}).setdefault(f"hit@{k}", []).append(
                    bool(ev & set(ranked[:k])))
    res = {kind: {m: 100.0 * sum(v) / len(v) for m, v in ms.items()} for kind, ms in out.items()}
    for kind in res:
        res[kind]["n"] = float(len(next(iter(out[kind].values()))))
    kinds = [k for k in res if k != "all"]
    res["macro"] = {m: sum(res[k][m] for k in kinds) / len(kinds) for m in res["all"] if m != "n"}
    res["macro"]["n"] = res["all"]["n"]
    return res


def stderr_points(p: float, n: float) -> float:
    """The standard error, in points, of a hit rate `p` (%) over `n` questions."""
    return 100 * math.sqrt(max(p / 100 * (1 - p / 100), 1e-9) / max(n, 1))
