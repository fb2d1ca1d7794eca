"""Ranking and relevance: candidates with their features in, ranked hits with a
calibrated relevance out. Pure (no store, no model), so it can be tuned on its own.

Search gathers up to `POOL` keyword candidates (full-text, stemmed) and `POOL` vector
candidates (nearest by cosine), and computes for each of the union: its cosine to the
query (from its stored vector, so keyword-only candidates have one too), its keyword
rank and score, and its vector rank. `rank()` then gives each a relevance in [0, 1]:

    relevance = sigmoid(W_COS * cosine + W_KW * keyword + W_RRF * rrf + BIAS)

where `keyword` is 1 for a full-text match (0 otherwise) and `rrf` the reciprocal rank
fusion of both ranks, scaled to [0, 1]. Hits are ordered by relevance, so the order is
the fused one and a threshold means the same for every query. The coefficients are
starting values set by hand for all-MiniLM-L6-v2, whose cosine between a question and
the fact answering it is mostly above 0.35 and between unrelated texts mostly below
0.2 (sigmoid midpoint near cosine 0.35-0.43), checked on tests/test_memory.py's facts;
they are not yet fitted on a labelled set (bench/memory.py's data is where to fit
them), and another embedder needs its own values.

Example:
    ranked = rank([Candidate(seq=3, cosine=0.71, keyword_rank=0, vector_rank=1)])
    ranked[0].relevance  # ~0.9
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

POOL = 50  # candidates taken from each retriever
RRF_K = 60  # the usual reciprocal-rank-fusion constant
MAX_TERMS = 32  # keyword query terms kept (the first distinct ones)

# Hand-set starting values (see the module docstring): not yet fitted.
W_COS = 14.0
W_KW = 1.0
W_RRF = 1.0
BIAS = -6.0

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One memory found by either retriever, with its features.

    Example:
        Candidate(seq=9, cosine=0.42, keyword_rank=None, vector_rank=3)
    """

    seq: int
    cosine: float
    keyword_rank: int | None = None  # 0 = best full-text match; None: not matched
    keyword_score: float | None = None  # the database's score (per-query scale)
    vector_rank: int | None = None  # 0 = nearest; None: not among the vector candidates


@dataclass(frozen=True, slots=True)
class Ranked:
    """A candidate's place: its `seq` and calibrated `relevance` in [0, 1].

    Example:
        [r.seq for r in rank(cands) if r.relevance >= 0.5]
    """

    seq: int
    relevance: float


def terms(query: str) -> list[str]:
    """The keyword terms of `query`: its words (letters and digits of any script), lower
    case, distinct, at most `MAX_TERMS`; operators and quotes are dropped.

    Example: `terms('tea OR "coffee"?')  # ['tea', 'or', 'coffee']`
    """
    words = (w.lower() for w in _WORD.findall(query))
    return list(dict.fromkeys(words))[:MAX_TERMS]


def rrf(c: Candidate) -> float:
    """Reciprocal rank fusion of the candidate's two ranks, scaled so 1 is first in both."""
    total = sum(1.0 / (RRF_K + r + 1) for r in (c.keyword_rank, c.vector_rank) if r is not None)
    return total / (2.0 / (RRF_K + 1))


def relevance(c: Candidate) -> float:
    """The calibrated relevance of one candidate, in [0, 1]."""
    kw = 1.0 if c.keyword_rank is not None else 0.0
    z = W_COS * c.cosine + W_KW * kw + W_RRF * rrf(c) + BIAS
    return 1.0 / (1.0 + math.exp(-z))


def rank(candidates: Sequence[Candidate]) -> list[Ranked]:
    """Candidates ranked by relevance, the most relevant first (ties: by seq, newest)."""
    out = [Ranked(c.seq, relevance(c)) for c in candidates]
    out.sort(key=lambda r: (-r.relevance, -r.seq))
    return out
