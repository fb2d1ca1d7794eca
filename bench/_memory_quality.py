"""Retrieval quality: hit@5 / hit@10 per question kind on the test split.

Rows: the full-text baseline (FTS5 BM25 over raw turns, porter, OR'ed content
words), the naive fusion (MiniLM over raw turns + BM25, reciprocal rank fusion),
Keel's `app.memory.search` with the default MiniLM embedder and the ingestion
advice in docs/memory.md, and the same pipeline with all-mpnet-base-v2 (its own
coefficients, fitted on dev like MiniLM's).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import _memory_proto as P
import numpy as np
from _memory_embed import embed
from memory_data import Dataset, Question

# What a memory is when a conversation is remembered: see docs/memory.md, "Remembering
# conversations". Picked on the dev split (bench/memory.py --fit prints the comparison).
ADVICE = "sentence"
ITEMS_PER_QUERY = 30  # memories asked for per question; several may be one turn's sentences
# all-mpnet-base-v2's coefficients, fitted like MiniLM's (python bench/memory.py --fit).
MPNET_FIT = {"W_COS": 14.417, "W_KW": 0.0, "W_RRF": 0.0, "BIAS": -6.378}


class CachedEmbedder:
    """A keel.embed.Embedder over bench/.cache: the same vectors MiniLM makes, computed once.

    Example: `keel.App(store, embedder=CachedEmbedder("minilm"))`
    """

    def __init__(self, model: str = "minilm") -> None:
        self.model = model
        # The name vectors are stored under: MiniLM's own, since these are its vectors.
        self.name = "local:all-MiniLM-L6-v2" if model == "minilm" else f"bench:{model}"

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [list(map(float, v)) for v in embed(self.model, texts)]


def naive_rrf(corpus: P.Corpus, q: Question) -> list[str]:
    """MiniLM over raw turns fused with BM25 by plain reciprocal rank fusion."""
    score: dict[int, float] = {}
    cands = corpus.candidates(q)
    by_vec = sorted(cands, key=lambda c: -c.cosine)
    by_kw = sorted((c for c in cands if c.keyword_rank is not None),
                   key=lambda c: c.keyword_rank or 0)
    for ranked in (by_kw, by_vec):
        for r, c in enumerate(ranked):
            score[c.item] = score.get(c.item, 0.0) + 1.0 / (60 + r + 1)
    return corpus.to_turns(sorted(score, key=score.__getitem__, reverse=True))


async def keel_search(data: Dataset, variant: str, embedder: Any) -> dict[str, list[str]]:
    """Every question through `app.memory.search`: the ranked distinct turn ids."""
    import keel

    with tempfile.TemporaryDirectory() as tmp:
        app = keel.App(f"sqlite:///{Path(tmp) / 'memory.db'}", embedder=embedder)
        try:
            for p in data.personas():
                conv = [t for t in data.turns if t.persona == p]
                items = [{"text": it.text, "context": it.context,
                          "metadata": {"turn": conv[it.turn].id}}
                         for it in P.ingest(conv, variant)]
                for i in range(0, len(items), 500):
                    await app.memory.add_many(items[i:i + 500], namespace=p)
            out: dict[str, list[str]] = {}
            for q in data.questions:
                hits = await app.memory.search(q.text, namespace=q.persona, k=ITEMS_PER_QUERY)
                out[q.id] = list(dict.fromkeys(h.metadata["turn"] for h in hits))
                out[q.id + "/scores"] = [f"{h.score:.6f}" for h in hits]
        finally:
            await app.close()
    return out


def run(data: Dataset, *, mpnet: bool) -> dict[str, Any]:
    """Rows of hit rates, keyed by system name."""
    raw = P.Corpus(data, "turn")
    rows: dict[str, Any] = {
        "full-text BM25 (baseline)": P.hit_rates(data, raw.rank_fts),
        "naive MiniLM + BM25 RRF": P.hit_rates(data, lambda q: naive_rrf(raw, q)),
        "MiniLM vectors alone": P.hit_rates(data, raw.rank_vector),
    }
    ranked = asyncio.run(keel_search(data, ADVICE, CachedEmbedder("minilm")))
    rows[f"Keel app.memory.search (MiniLM, {ADVICE})"] = P.hit_rates(
        data, lambda q: ranked[q.id])
    rows["_relevance"] = calibration(data, ranked) | thresholds(data)
    if mpnet:
        corpus = P.Corpus(data, ADVICE, embedder="mpnet")
        w = np.array([MPNET_FIT[k] for k in ("BIAS", "W_COS", "W_KW", "W_RRF")])
        rows[f"same pipeline, all-mpnet-base-v2 ({ADVICE})"] = P.hit_rates(
            data, P.rank_weighted(corpus, w, [0, 1, 2]))
    return rows


def calibration(data: Dataset, ranked: dict[str, list[str]]) -> dict[str, float]:
    """What `min_relevance` means: the top hit's relevance when it is evidence vs not."""
    good, bad = [], []
    for q in data.questions:
        scores = [float(s) for s in ranked[q.id + "/scores"]]
        if not scores:
            continue
        (good if ranked[q.id][0] in set(q.evidence) else bad).append(scores[0])
    return {"top_relevant_mean": float(np.mean(good)) if good else 0.0,
            "top_irrelevant_mean": float(np.mean(bad)) if bad else 0.0}


def thresholds(data: Dataset) -> dict[str, float]:
    """At min_relevance 0.5 and 0.7 (keel's fitted MiniLM coefficients): the share of
    questions whose right best hit passes, and of questions asked where nothing is
    relevant (another persona's namespace, topic never mentioned) that still get a hit."""
    import _memory_fit

    from keel.memory import retrieval

    corpus = P.Corpus(data, ADVICE)
    beta = retrieval.W_KW / retrieval.W_COS
    gamma = retrieval.W_RRF / retrieval.W_COS
    x, y = _memory_fit.calibration_rows(data, corpus, beta, gamma)
    rel = 1 / (1 + np.exp(-(retrieval.W_COS * x[:, 0] + retrieval.BIAS)))
    out = {}
    for t in (0.5, 0.7):
        out[f"answers_kept@{t}"] = float((rel[y == 1] >= t).mean())
        out[f"unanswerable_hit@{t}"] = float((rel[y == 0] >= t).mean())
    return out
