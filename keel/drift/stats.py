"""The statistics drift monitors use, in pure Python (no numpy or scipy at run time;
tests/test_drift_stats.py checks each against scipy).

- categories: the population stability index (PSI) and the chi-square test of
  homogeneity of two samples' counts;
- scores and metrics: the two-sided Mann-Whitney U test (normal approximation with tie
  and continuity corrections, as scipy's `method="asymptotic"`) and its rank-biserial
  effect size;
- rates: the pooled two-proportion z test;
- trends: the least-squares slope of values over their order, with its t test.

Example:
    >>> round(psi({"a": 50, "b": 50}, {"a": 80, "b": 20}), 3)
    0.377
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_EPS = 1e-12
_ITER = 300


@dataclass(frozen=True)
class Test:
    """A test's statistic and p-value (the probability of one at least this extreme
    when nothing changed)."""

    statistic: float
    p_value: float


def psi(reference: Mapping[str, float], recent: Mapping[str, float], floor: float = 1e-4) -> float:
    """Population stability index of two count tables: sum((q - p) * ln(q / p)) over
    the categories of either, shares floored at `floor` so a category one side lacks
    counts as rare, not infinite. Under 0.1 is usually read as stable, over 0.2 as a shift.
    """
    n_ref, n_new = sum(reference.values()), sum(recent.values())
    if n_ref <= 0 or n_new <= 0:
        return 0.0
    total = 0.0
    for cat in set(reference) | set(recent):
        p = max(reference.get(cat, 0) / n_ref, floor)
        q = max(recent.get(cat, 0) / n_new, floor)
        total += (q - p) * math.log(q / p)
    return total


def chi_square(reference: Mapping[str, float], recent: Mapping[str, float]) -> Test:
    """Chi-square test that two count tables come from one distribution (a 2 x k
    contingency table, no continuity correction); p = 1 with fewer than 2 categories."""
    cats = [c for c in set(reference) | set(recent) if reference.get(c, 0) + recent.get(c, 0)]
    n_ref, n_new = sum(reference.get(c, 0) for c in cats), sum(recent.get(c, 0) for c in cats)
    if len(cats) < 2 or n_ref <= 0 or n_new <= 0:
        return Test(0.0, 1.0)
    total = n_ref + n_new
    stat = 0.0
    for c in cats:
        col = reference.get(c, 0) + recent.get(c, 0)
        for n, observed in ((n_ref, reference.get(c, 0)), (n_new, recent.get(c, 0))):
            expected = n * col / total
            stat += (observed - expected) ** 2 / expected
    return Test(stat, chi2_sf(stat, len(cats) - 1))


def mann_whitney(x: Sequence[float], y: Sequence[float], alternative: str = "two-sided") -> Test:
    """Mann-Whitney U of `x` against `y` (U counts pairs where x wins), normal
    approximation with tie and continuity corrections. `alternative`: "two-sided",
    "less" (x tends lower) or "greater"."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return Test(0.0, 1.0)
    ranks, ties = _ranks([*x, *y])
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    n = n1 + n2
    mu = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return Test(u1, 1.0)
    sd = math.sqrt(var)
    if alternative == "two-sided":
        z = (abs(u1 - mu) - 0.5) / sd
        return Test(u1, min(1.0, 2 * normal_sf(z)))
    if alternative == "greater":
        return Test(u1, normal_sf((u1 - mu - 0.5) / sd))
    if alternative == "less":
        return Test(u1, normal_sf((mu - u1 - 0.5) / sd))
    raise ValueError(f"alternative must be two-sided, less or greater, not {alternative!r}")


def rank_biserial(u: float, n1: int, n2: int) -> float:
    """Effect size of a Mann-Whitney U, from -1 to 1: 2U/(n1 n2) - 1 (0: no shift)."""
    return 2 * u / (n1 * n2) - 1 if n1 and n2 else 0.0


def two_proportions(x1: float, n1: int, x2: float, n2: int, alternative: str = "two-sided") -> Test:
    """Pooled z test that rate x1/n1 equals x2/n2; the statistic is z of (x2/n2 - x1/n1).
    `alternative="less"`: the second rate is lower."""
    if n1 == 0 or n2 == 0:
        return Test(0.0, 1.0)
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return Test(0.0, 1.0)
    z = (x2 / n2 - x1 / n1) / se
    if alternative == "two-sided":
        return Test(z, min(1.0, 2 * normal_sf(abs(z))))
    if alternative == "less":
        return Test(z, normal_sf(-z))
    if alternative == "greater":
        return Test(z, normal_sf(z))
    raise ValueError(f"alternative must be two-sided, less or greater, not {alternative!r}")


@dataclass(frozen=True)
class Trend:
    """A least-squares line through (x, y): its slope, and the two-sided p-value of the
    t test that the slope is 0."""

    slope: float
    intercept: float
    p_value: float


def trend(x: Sequence[float], y: Sequence[float]) -> Trend:
    """The least-squares slope of `y` over `x` and its significance (as scipy's
    `linregress`)."""
    n = len(x)
    if n < 3 or n != len(y):
        return Trend(0.0, y[0] if n else 0.0, 1.0)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    if sxx == 0:
        return Trend(0.0, my, 1.0)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    sse = sum((b - intercept - slope * a) ** 2 for a, b in zip(x, y, strict=True))
    df = n - 2
    if sse <= _EPS * max(1.0, sxx):
        return Trend(slope, intercept, 0.0 if slope else 1.0)
    t = slope / math.sqrt(sse / df / sxx)
    return Trend(slope, intercept, t_sf_two_sided(t, df))


# -- distributions ---------------------------------------------------------------------


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X chi-square with `dof` degrees of freedom."""
    if x <= 0:
        return 1.0
    return _gamma_q(dof / 2, x / 2)


def t_sf_two_sided(t: float, df: float) -> float:
    """P(|T| > |t|) for T Student-t with `df` degrees of freedom."""
    return _beta_inc(df / 2, 0.5, df / (df + t * t))


def _ranks(values: list[float]) -> tuple[list[float], float]:
    """Average ranks (1-based) and the tie term sum(t^3 - t) over groups of ties."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        rank = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = rank
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    return ranks, ties


def _gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x)."""
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # the series for P converges fast here
        term = total = 1 / a
        ap = a
        for _ in range(_ITER):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1 - total * math.exp(log_front))
    # the continued fraction for Q (modified Lentz)
    b = x + 1 - a
    c = 1 / 1e-300
    d = 1 / b
    h = d
    for i in range(1, _ITER):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


def _beta_inc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return front * _beta_cf(a, b, x) / a
    return 1 - front * _beta_cf(b, a, 1 - x) / b


def _beta_cf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (tiny if abs(d) < tiny else d)
    h = d
    for m in range(1, _ITER):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1)),
        ):
            d = 1 + num * d
            d = 1 / (tiny if abs(d) < tiny else d)
            c = 1 + num / c
            c = tiny if abs(c) < tiny else c
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h
