"""The statistics of the CI gate, in pure Python (no numpy needed for a few thousand
cases): a paired, case-clustered bootstrap of the mean change against a baseline, its
confidence interval and the minimum detectable effect; pass^k over repeats."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Two-sided 95% interval, 80% power: the usual minimum detectable effect multiplier.
_Z_ALPHA, _Z_POWER = 1.959964, 0.841621


@dataclass(frozen=True)
class Paired:
    """One scorer's change against the baseline over the cases both have.

    `delta` is the current mean minus the baseline's; `low`/`high` its bootstrap
    interval; `mde` the smallest change this many cases could detect; `regressed` is
    True only when the whole interval lies below zero.
    """

    scorer: str
    n: int
    baseline: float
    current: float
    delta: float
    low: float
    high: float
    mde: float
    regressed: bool


def paired(
    scorer: str,
    current: Mapping[str, Sequence[float]],
    baseline: Mapping[str, Sequence[float]],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Paired | None:
    """Compare one scorer's values per case id (a list per case: one value per repeat).

    Cases are matched by id; repeats are averaged within their case, and the bootstrap
    resamples whole cases, so repeats of one case (correlated) count once: the
    clustered bootstrap. Seeded: the same data give the same interval. None when no
    case is in both.

    Example:
        paired("fields", {"a": [1.0], "b": [0.0]}, {"a": [1.0], "b": [1.0]})
    """
    ids = sorted(set(current) & set(baseline))
    if not ids:
        return None
    cur = [statistics.fmean(current[i]) for i in ids]
    base = [statistics.fmean(baseline[i]) for i in ids]
    diffs = [c - b for c, b in zip(cur, base, strict=True)]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = means[math.floor(tail * (resamples - 1))]
    high = means[math.ceil((1 - tail) * (resamples - 1))]
    se = statistics.stdev(diffs) / math.sqrt(n) if n > 1 else 0.0
    delta = statistics.fmean(diffs)
    return Paired(
        scorer=scorer,
        n=n,
        baseline=statistics.fmean(base),
        current=statistics.fmean(cur),
        delta=delta,
        low=low,
        high=high,
        mde=(_Z_ALPHA + _Z_POWER) * se,
        # A change that is all zeros has the interval [0, 0]: never a regression.
        regressed=high < 0,
    )


def pass_hat_k(passes: Mapping[str, Sequence[bool]]) -> float:
    """pass^k: the share of cases that passed in every one of their repeats."""
    return statistics.fmean(all(v) for v in passes.values()) if passes else 0.0


def spread(values: Mapping[str, Sequence[float]]) -> float:
    """The mean, over cases, of the standard deviation of a case's values across its
    repeats: 0 when every repeat of every case scored the same."""
    devs = [statistics.pstdev(v) for v in values.values() if len(v) > 1]
    return statistics.fmean(devs) if devs else 0.0
