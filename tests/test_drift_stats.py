"""keel.drift.stats against scipy: the same statistics and p-values on seeded samples
(with ties, small and large, shifted and not), and PSI against its definition."""

from __future__ import annotations

import math
import random

import pytest

scipy_stats = pytest.importorskip("scipy.stats")

from keel.drift import stats  # noqa: E402


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_chi_square_matches_scipy(seed: int) -> None:
    rng = random.Random(seed)
    cats = ["a", "b", "c", "d"][: 2 + seed % 3]
    ref = {c: rng.randint(0, 60) + 1 for c in cats}
    new = {c: rng.randint(0, 30) + (10 if c == "a" and seed % 2 else 0) for c in cats}
    got = stats.chi_square(ref, new)
    keep = [c for c in cats if ref[c] + new[c]]
    chi2, p, _, _ = scipy_stats.chi2_contingency(
        [[ref[c] for c in keep], [new[c] for c in keep]], correction=False
    )
    assert _close(got.statistic, chi2) and _close(got.p_value, p)


@pytest.mark.parametrize("x", [0.5, 3.0, 10.0, 40.0, 200.0])
@pytest.mark.parametrize("dof", [1, 2, 5, 30])
def test_chi2_and_t_tails_match_scipy(x: float, dof: int) -> None:
    assert _close(stats.chi2_sf(x, dof), scipy_stats.chi2.sf(x, dof))
    t = x / 10
    assert _close(stats.t_sf_two_sided(t, dof), 2 * scipy_stats.t.sf(t, dof))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_mann_whitney_matches_scipy(seed: int, alternative: str) -> None:
    rng = random.Random(seed)
    shift = (seed % 3) * 0.3
    x = [round(rng.gauss(shift, 1), 1) for _ in range(30 + seed * 20)]  # rounded: ties
    y = [round(rng.gauss(0, 1), 1) for _ in range(50 + seed * 7)]
    got = stats.mann_whitney(x, y, alternative)
    want = scipy_stats.mannwhitneyu(x, y, alternative=alternative, method="asymptotic")
    assert _close(got.statistic, want.statistic) and _close(got.p_value, want.pvalue)


@pytest.mark.parametrize("seed", range(5))
def test_two_proportions_is_the_2x2_chi_square(seed: int) -> None:
    rng = random.Random(seed)
    n1, n2 = rng.randint(50, 500), rng.randint(50, 500)
    x1, x2 = rng.randint(0, n1), rng.randint(0, n2)
    got = stats.two_proportions(x1, n1, x2, n2)
    chi2, p, _, _ = scipy_stats.chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False)
    assert _close(got.statistic**2, chi2) and _close(got.p_value, p)
    one = stats.two_proportions(x1, n1, x2, n2, "less")
    want = p / 2 if got.statistic < 0 else 1 - p / 2
    assert _close(one.p_value, want)


@pytest.mark.parametrize("seed", range(5))
def test_trend_matches_linregress(seed: int) -> None:
    rng = random.Random(seed)
    x = [float(i) for i in range(20 + 40 * seed)]
    y = [0.9 - 0.001 * seed * i + rng.gauss(0, 0.05) for i in x]
    got = stats.trend(x, y)
    want = scipy_stats.linregress(x, y)
    assert _close(got.slope, want.slope) and _close(got.intercept, want.intercept)
    assert _close(got.p_value, want.pvalue)


def test_psi_by_definition_and_with_a_missing_category() -> None:
    ref, new = {"a": 50, "b": 30, "c": 20}, {"a": 20, "b": 30, "c": 50}
    want = sum((q - p) * math.log(q / p) for p, q in ((0.5, 0.2), (0.3, 0.3), (0.2, 0.5)))
    assert _close(stats.psi(ref, new), want)
    assert stats.psi(ref, ref) == 0.0
    assert stats.psi({"a": 10}, {"a": 5, "new": 5}) > 1  # a category never seen before
    assert stats.psi({}, new) == 0.0


def test_degenerate_input_gives_no_evidence() -> None:
    assert stats.mann_whitney([], [1.0]).p_value == 1.0
    assert stats.mann_whitney([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    assert stats.two_proportions(5, 10, 0, 0).p_value == 1.0
    assert stats.chi_square({"a": 3}, {"a": 9}).p_value == 1.0
    assert stats.trend([1.0, 2.0], [1.0, 2.0]).p_value == 1.0
    with pytest.raises(ValueError, match="alternative must be"):
        stats.mann_whitney([1.0], [2.0], "lower")
