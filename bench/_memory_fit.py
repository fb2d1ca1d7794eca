"""Fitting on the dev split: which ingestion, and the relevance coefficients.

`python bench/memory.py --fit` (the test split is never looked at here):

1. compares ingestion variants (`_memory_proto.ingest`) by dev hit@5 of vectors alone;
2. for the chosen variant, picks the ranking weights of the keyword features relative
   to the cosine, `score = cosine + beta * keyword + gamma * rrf`, by dev hit@5 over a
   grid. beta and gamma are kept >= 0: on this data a negative keyword weight scores
   higher, only because a paraphrase question shares no word with its evidence by
   construction, which no real workload promises;
3. calibrates what `min_relevance` should tell apart: a question's best hit when it
   is the evidence (positive), and the best hit of the same question asked in another
   persona's namespace that never mentions the topic (negative: nothing there is
   relevant, though its on-topic chatter and other people's news come close). A
   logistic regression of that label on the fused score gives the scale and bias, so
   relevance = sigmoid(a * score + b), both classes weighted the same, so 0.5 is
   where, on dev, a right answer becomes likelier than "nothing relevant here".
   (Fitting on every candidate instead puts the midpoint near cosine 0.6, below most
   right answers: evidence is ~1% of 100 candidates, and restatements count against.)

It prints the constants for keel/memory/retrieval.py (MiniLM) and
`_memory_quality.MPNET_FIT` (all-mpnet-base-v2).
"""

from __future__ import annotations

import dataclasses
import itertools

import _memory_proto as P
import numpy as np
from memory_data import Dataset, Question, build

VARIANTS = ("turn", "sentence", "sentence+who")
CHOSEN = "sentence"
BETAS = (0.0, 0.02, 0.05, 0.1, 0.2)
GAMMAS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)


def _line(name: str, res: dict[str, dict[str, float]]) -> str:
    kinds = ("keyword", "paraphrase", "temporal", "multi", "all", "macro")
    return f"{name:34s} " + "  ".join(f"{k} {res[k]['hit@5']:5.1f}" for k in kinds)


def _prepared(data: Dataset, corpus: P.Corpus) -> list[tuple[np.ndarray, list[str], set[str]]]:
    out = []
    for q in data.questions:
        cands = corpus.candidates(q)
        turns = [corpus.turns[corpus.items[c.item].turn].id for c in cands]
        out.append((P.features(cands)[:, :3], turns, set(q.evidence)))
    return out


def _hit5(prepared: list[tuple[np.ndarray, list[str], set[str]]], beta: float,
          gamma: float) -> float:
    hits = 0
    for f, turns, ev in prepared:
        s = f[:, 0] + beta * f[:, 1] + gamma * f[:, 2]
        top = list(dict.fromkeys(turns[j] for j in np.argsort(-s, kind="stable")))[:5]
        hits += bool(ev & set(top))
    return 100.0 * hits / len(prepared)


def _top(corpus: P.Corpus, q: Question, beta: float, gamma: float) -> tuple[float, str]:
    cands = corpus.candidates(q)
    if not cands:
        return 0.0, ""
    f = P.features(cands)
    s = f[:, 0] + beta * f[:, 1] + gamma * f[:, 2]
    j = int(np.argmax(s))
    return float(s[j]), corpus.turns[corpus.items[cands[j].item].turn].id


def calibration_rows(data: Dataset, corpus: P.Corpus, beta: float,
                     gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """(best-hit score, 1 if it answers / 0 if asked where nothing is relevant)."""
    slots: dict[str, set[str]] = {}
    for q in data.questions:
        slots.setdefault(q.persona, set()).add(q.slot)
    personas = data.personas()
    xs, ys = [], []
    for q in data.questions:
        score, turn = _top(corpus, q, beta, gamma)
        if turn in q.evidence:
            xs.append(score)
            ys.append(1.0)
        start = personas.index(q.persona)
        for p in personas[start + 1:] + personas[:start]:
            if q.slot not in slots[p]:
                xs.append(_top(corpus, dataclasses.replace(q, persona=p), beta, gamma)[0])
                ys.append(0.0)
                break
    return np.array(xs)[:, None], np.array(ys)


def coefficients(data: Dataset, corpus: P.Corpus) -> dict[str, float]:
    """W_COS, W_KW, W_RRF and BIAS for `corpus`'s embedder, fitted as the docstring says."""
    prepared = _prepared(data, corpus)
    grid = sorted(((_hit5(prepared, b, g), -b - g, b, g)
                   for b, g in itertools.product(BETAS, GAMMAS)), reverse=True)
    _, _, beta, gamma = grid[0]
    x, y = calibration_rows(data, corpus, beta, gamma)
    bias, scale = P.fit_logistic(x, y, balanced=True)
    return {"W_COS": float(scale), "W_KW": float(scale * beta), "W_RRF": float(scale * gamma),
            "BIAS": float(bias), "dev_hit5": grid[0][0]}


def main(*, quick: bool = False) -> None:
    data = build("dev", quick=quick)
    print(f"dev split: {len(data.personas())} personas, {len(data.questions)} questions "
          "(hit@5, %)")
    raw = P.Corpus(data, "turn")
    print(_line("full-text BM25 (raw turns)", P.hit_rates(data, raw.rank_fts)))
    for variant in VARIANTS:
        corpus = raw if variant == "turn" else P.Corpus(data, variant)
        print(_line(f"{variant}: vectors alone", P.hit_rates(data, corpus.rank_vector)))
    for embedder in ("minilm",) if quick else ("minilm", "mpnet"):
        corpus = P.Corpus(data, CHOSEN, embedder=embedder)
        c = coefficients(data, corpus)
        w = np.array([c["BIAS"], c["W_COS"], c["W_KW"], c["W_RRF"]])
        print(_line(f"{CHOSEN}, {embedder}: fitted", P.hit_rates(
            data, P.rank_weighted(corpus, w, [0, 1, 2]))))
        print("    " + ", ".join(f"{k} = {v:.3f}" for k, v in c.items()))
