"""Retrieval prototype on the bench data: full-text baseline, naive fusion, tuned hybrid.

Built from the same parts as keel/memory (SQLite FTS5 with porter stemming, MiniLM
vectors), so a configuration that wins here can be ported there. `Corpus` indexes
one split; `rank_*` return, per question, the ranked evidence-candidate turn ids.
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


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?:])\s+", text) if s]


def window(turns: list[Turn], i: int) -> str:
    """A turn's `context`: its date, speaker, and its neighbours in the conversation."""
    t = turns[i]
    parts = [f"{t.date} {t.speaker}"]
    for j in (i - 1, i + 1):
        if 0 <= j < len(turns) and turns[j].session == t.session:
            parts.append(f"{turns[j].speaker}: {turns[j].text}")
    return "\n".join(parts)


def fts_query(text: str) -> str:
    """OR of the question's content words: a well-configured keyword query."""
    return " OR ".join(f'"{w}"' for w in content_terms(text))


@dataclass
class Corpus:
    """One split indexed three ways: raw turns (baseline), turns with context, vectors."""

    data: Dataset
    embedder: str = "minilm"

    def __post_init__(self) -> None:
        self.turns = self.data.turns
        self.pos = {t.id: i for i, t in enumerate(self.turns)}
        by_persona: dict[str, list[int]] = {}
        for i, t in enumerate(self.turns):
            by_persona.setdefault(t.persona, []).append(i)
        self.by_persona = {p: np.array(ix) for p, ix in by_persona.items()}
        ctx = [window([self.turns[k] for k in ix], n) for ix in by_persona.values()
               for n in range(len(ix))]
        order = [k for ix in by_persona.values() for k in ix]
        self.context = [""] * len(self.turns)
        for k, c in zip(order, ctx, strict=True):
            self.context[k] = c
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE raw USING fts5(text, persona UNINDEXED, "
                        "tokenize='porter unicode61')")
        self.db.execute("CREATE VIRTUAL TABLE ctx USING fts5(text, context, persona UNINDEXED, "
                        "tokenize='porter unicode61')")
        self.db.executemany("INSERT INTO raw(rowid, text, persona) VALUES (?, ?, ?)",
                            [(i, t.text, t.persona) for i, t in enumerate(self.turns)])
        self.db.executemany("INSERT INTO ctx(rowid, text, context, persona) VALUES (?, ?, ?, ?)",
                            [(i, t.text, self.context[i], t.persona)
                             for i, t in enumerate(self.turns)])
        self.vec = embed(self.embedder, [t.text for t in self.turns])
        # Sentence vectors: a fact said in passing is one sentence of a longer turn.
        self.sent_owner: list[int] = []
        sents: list[str] = []
        for i, t in enumerate(self.turns):
            for s in sentences(t.text):
                sents.append(s)
                self.sent_owner.append(i)
        self.sent_vec = embed(self.embedder, sents)
        self.owner = np.array(self.sent_owner)
        self.qvec = dict(zip([q.id for q in self.data.questions],
                             embed(self.embedder, [q.text for q in self.data.questions]),
                             strict=True))
        self.n = len(self.turns)

    # --- the two candidate sources ---------------------------------------------------

    def bm25(self, q: Question, table: str = "raw", weights: str = "",
             limit: int = 50) -> list[tuple[int, float]]:
        query = fts_query(q.text)
        if not query:
            return []
        rank = f"bm25({table}{', ' + weights if weights else ''})"
        rows = self.db.execute(
            f"SELECT rowid, {rank} FROM {table} WHERE {table} MATCH ? AND persona = ? "
            f"ORDER BY {rank} LIMIT ?", (query, q.persona, limit)).fetchall()
        return [(int(r), -float(s)) for r, s in rows]  # bm25() is negative: flip

    def cosines(self, q: Question, sentence: bool) -> dict[int, float]:
        ix = self.by_persona[q.persona]
        qv = self.qvec[q.id]
        cos = {int(i): float(c) for i, c in zip(ix, self.vec[ix] @ qv, strict=True)}
        if sentence:
            mask = np.isin(self.owner, ix)
            for owner, c in zip(self.owner[mask], self.sent_vec[mask] @ qv, strict=True):
                cos[int(owner)] = max(cos[int(owner)], float(c))
        return cos

    # --- rankers -----------------------------------------------------------------------

    def ids(self, rows: list[int]) -> list[str]:
        return [self.turns[i].id for i in rows]

    def rank_fts(self, q: Question) -> list[str]:
        return self.ids([i for i, _ in self.bm25(q)])

    def rank_vector(self, q: Question, sentence: bool = False) -> list[str]:
        cos = self.cosines(q, sentence)
        return self.ids(sorted(cos, key=cos.__getitem__, reverse=True)[:50])

    def rank_rrf(self, q: Question, k: int = 60) -> list[str]:
        """Naive fusion: reciprocal rank fusion of raw-turn BM25 and whole-turn cosine."""
        score: dict[int, float] = {}
        cos = self.cosines(q, False)
        vec = sorted(cos, key=cos.__getitem__, reverse=True)[:50]
        for ranked in ([i for i, _ in self.bm25(q)], vec):
            for r, i in enumerate(ranked):
                score[i] = score.get(i, 0.0) + 1.0 / (k + r + 1)
        return self.ids(sorted(score, key=score.__getitem__, reverse=True))

    # --- the tuned hybrid: features per candidate, a fitted linear score --------------------

    def features(self, q: Question, limit: int = 40) -> tuple[list[int], np.ndarray]:
        """Candidates (the union of both sources' top `limit`) and their feature rows."""
        kw = self.bm25(q, "ctx", "3.0, 1.0", limit)
        cos = self.cosines(q, True)
        vec = sorted(cos, key=cos.__getitem__, reverse=True)[:limit]
        cands = list(dict.fromkeys([i for i, _ in kw] + vec))
        kw_rank = {i: r for r, (i, _) in enumerate(kw)}
        kw_score = dict(kw)
        top = max(kw_score.values(), default=1.0) or 1.0
        vec_rank = {i: r for r, i in enumerate(vec)}
        ix = self.by_persona[q.persona]
        first, last = int(ix[0]), int(ix[-1])
        rows = []
        for i in cands:
            c = cos[i]
            rows.append([
                c,
                kw_score.get(i, 0.0) / top,
                1.0 / (1 + kw_rank[i]) if i in kw_rank else 0.0,
                1.0 / (1 + vec_rank[i]) if i in vec_rank else 0.0,
                (i - first) / max(1, last - first),  # position in the conversation: newer = 1
            ])
        return cands, np.array(rows, dtype=np.float64)


FEATURES = ["cosine", "bm25_rel", "kw_rrank", "vec_rrank", "recency"]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method; returns [bias, w...]."""
    xb = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(xb.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) + l2 * np.r_[0, w[1:]]
        h = (xb * (p * (1 - p))[:, None]).T @ xb + l2 * np.eye(len(w))
        step = np.linalg.solve(h, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return w


def training_rows(corpus: Corpus) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for q in corpus.data.questions:
        cands, x = corpus.features(q)
        ev = {corpus.pos[e] for e in q.evidence}
        xs.append(x)
        ys.append(np.array([1.0 if i in ev else 0.0 for i in cands]))
    return np.vstack(xs), np.concatenate(ys)


def rank_fitted(corpus: Corpus, w: np.ndarray) -> Ranker:
    def rank(q: Question) -> list[str]:
        cands, x = corpus.features(q)
        s = w[0] + x @ w[1:]
        return corpus.ids([cands[j] for j in np.argsort(-s)])
    return rank


def relevance(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(w[0] + x @ w[1:])))


def hit_rates(
    data: Dataset, rank: Ranker, ks: tuple[int, ...] = (5, 10)
) -> dict[str, dict[str, float]]:
    """Per kind and overall: the share of questions with an evidence turn in the top k."""
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
    return res


def stderr_points(p: float, n: float) -> float:
    return 100 * math.sqrt(max(p / 100 * (1 - p / 100), 1e-9) / max(n, 1))
