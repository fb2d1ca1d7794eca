"""Ranking and relevance: candidates with their features in, ranked hits with a
calibrated relevance out. Pure (no store, no model), so it can be tuned on its own.

Search gathers up to `POOL` keyword candidates (full-text, stemmed) and `POOL` vector
candidates (nearest by cosine), and computes for each of the union: its cosine to the
query (from its stored vector, so keyword-only candidates have one too), its keyword
rank and score, and its vector rank. `rank()` then gives each a relevance in [0, 1]:

    relevance = sigmoid(W_COS * cosine + W_KW * keyword + W_RRF * rrf + BIAS)

where `keyword` is 1 for a full-text match (0 otherwise) and `rrf` the reciprocal rank
fusion of both ranks, scaled to [0, 1]. Hits are ordered by relevance, so the order is
the fused one and a threshold means the same for every query.

The coefficients are fitted for all-MiniLM-L6-v2 on the dev split of bench/memory.py's
generated conversations (`python bench/memory.py --fit`; memories one sentence each,
as docs/memory.md advises). The ranking weights W_KW / W_COS and W_RRF / W_COS were
chosen by dev hit@5 over a grid kept >= 0: any weight on the keyword features lowered
hit@5 there (MiniLM already finds 99% of the questions naming a rare word), so both
are 0, and the full-text side only feeds candidates that the vectors would miss (or
that remain when a filter or `as_of` removes vector candidates). W_COS and BIAS come
from a logistic regression, both classes weighted alike, of "the best hit answers the
question" (asked in its own namespace) against "nothing relevant" (the same question
asked in a namespace that never mentions its topic): relevance 0.5 is cosine ~0.48,
where on dev 71% of right answers pass and 19% of unanswerable questions return a
hit (0.7: 56% and 8%). Another embedder needs its own values (the bench fits
all-mpnet-base-v2's too).

Example:
    ranked = rank([Candidate(seq=3, cosine=0.71, keyword_rank=0, vector_rank=1)])
    ranked[0].relevance  # ~0.93
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

POOL = 50  # candidates taken from each retriever
RRF_K = 60  # the usual reciprocal-rank-fusion constant
MAX_TERMS = 32  # keyword query terms kept (the first distinct ones)

# Fitted on the bench's dev split (module docstring): relevance 0.5 at cosine ~0.48.
W_COS = 11.074
W_KW = 0.0
W_RRF = 0.0
BIAS = -5.291

# Words that carry no topic: left out of the keyword query, as Postgres's 'english'
# configuration does anyway; on SQLite each would match nearly every memory, making
# the full-text side slow (every row scored) and its candidates noise.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your
    yours yourself yourselves""".split()  # noqa: SIM905 (a long list reads better as words)
)

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
    case, distinct, English stopwords left out (all kept if nothing else is left), at
    most `MAX_TERMS`; operators and quotes are dropped.

    Example: `terms('tea OR "coffee" for me?')  # ['tea', 'coffee']`
    """
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
    content = [w for w in words if w not in STOPWORDS]
    return (content or words)[:MAX_TERMS]


def rrf(c: Candidate) -> float:
    """Reciprocal rank fusion of the candidate's two ranks, scaled so 1 is first in both."""
    total = sum(1.0 / (RRF_K + r + 1) for r in (c.keyword_rank, c.vector_rank) if r is not None)
    return total / (2.0 / (RRF_K + 1))


# (W_COS, BIAS) of the embedder whose cosines `relevance` reads; an embedder may carry
# its own as a `calibration` attribute (fitted with `python bench/memory.py --fit`).
MINILM = (W_COS, BIAS)


def calibration_of(embedder: object) -> tuple[float, float]:
    """The (cosine weight, bias) that turn `embedder`'s cosines into relevance: its own
    `calibration` attribute, else all-MiniLM-L6-v2's (whose cosines other sentence
    embedders' resemble only roughly: fit yours for a threshold that means the same)."""
    cal = getattr(embedder, "calibration", None)
    if cal is None:
        return MINILM
    w, b = cal
    return float(w), float(b)


def relevance(c: Candidate, calibration: tuple[float, float] = MINILM) -> float:
    """The calibrated relevance of one candidate, in [0, 1]."""
    w_cos, bias = calibration
    kw = 1.0 if c.keyword_rank is not None else 0.0
    z = w_cos * c.cosine + W_KW * kw + W_RRF * rrf(c) + bias
    return 1.0 / (1.0 + math.exp(-z))


def rank(
    candidates: Sequence[Candidate], calibration: tuple[float, float] = MINILM
) -> list[Ranked]:
    """Candidates ranked by relevance, the most relevant first (ties: by seq, newest)."""
    out = [Ranked(c.seq, relevance(c, calibration)) for c in candidates]
    out.sort(key=lambda r: (-r.relevance, -r.seq))
    return out
