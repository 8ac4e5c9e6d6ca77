"""Coverage of the engine's 95% intervals, by simulation with a fixed seed (issue 9 item 3).

For every (statistic, method, seed count) the suite uses, thousands of simulated claims are drawn from
distributions with a known answer and the engine's own interval functions (vectorised) are applied to them all
at once; each must cover the truth at least 93% of the time (nominal 95%, less Monte Carlo slack). The families:
normal seeds (the t interval's model), heavy tails (Student-t(3)) and, where the statistic's target is defined
for skewed data, moderate skew (gamma(4)). Fractions are checked exactly, not by simulation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import special
from scipy import stats as scipy_stats

from reprolab.claims.loader import load_claims
from reprolab.claims.stats import (
    INTERVAL_METHODS,
    clopper_pearson_interval,
    expanded_bootstrap_interval,
    iqm,
    order_statistic_median_interval,
    probability_of_improvement,
    student_t_interval,
)

ROOT = Path(__file__).resolve().parents[2]
MIN_COVERAGE = 0.93
GRID = {
    "mean": [2, 3, 5, 10],
    "paired_difference": [2, 3, 5, 10],
    "iqm": [6, 10],
    "median": [6, 10],
    "fraction": [1, 5, 10, 12, 20],
}


def _suite_cells() -> set[tuple[str, int]]:
    """(statistic, n) of every claim whose interval the engine computes (ci95 verdicts and point displays)."""
    claims, _ = load_claims([ROOT / "expectations"])
    cells = set()
    for item in claims:
        statistic, n = item.claim.expect.statistic, len(item.claim.seed_list)
        method = INTERVAL_METHODS.get(statistic)
        if method is not None and n >= method.min_seeds:
            cells.add((statistic, n))
    return cells


CELLS = sorted(_suite_cells() | {(statistic, n) for statistic, ns in GRID.items() for n in ns})

# name -> (draw(rng, shape), mean, median); symmetric families have mean = median = IQM target
FAMILIES = {
    "normal": (lambda rng, shape: rng.normal(0.3, 0.05, size=shape), 0.3, 0.3),
    "student-t3": (lambda rng, shape: 0.1 * rng.standard_t(3, size=shape), 0.0, 0.0),
    "gamma4": (
        lambda rng, shape: rng.gamma(4.0, 0.5, size=shape),
        2.0,
        0.5 * float(special.gammaincinv(4.0, 0.5)),
    ),
}
SYMMETRIC = ("normal", "student-t3")


def _coverage(low: np.ndarray, high: np.ndarray, truth: float) -> float:
    return float(np.mean((low <= truth) & (truth <= high)))


@pytest.mark.parametrize(("statistic", "n"), [c for c in CELLS if c[0] != "fraction"], ids=str)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_interval_covers_at_nominal_level(statistic: str, n: int, family: str) -> None:
    rng = np.random.default_rng(20261202 + 1000 * n + len(statistic) * 7 + len(family))
    draw, mean, median = FAMILIES[family]
    if statistic in ("mean", "paired_difference"):
        values = draw(rng, (20_000, n))
        if statistic == "paired_difference":  # differences of two arms sharing a per-seed offset
            offset = rng.normal(0.0, 1.0, size=(20_000, n))
            values = (values + offset) - offset
        coverage = _coverage(*student_t_interval(values), mean)
    elif statistic == "median":
        coverage = _coverage(*order_statistic_median_interval(draw(rng, (20_000, n))), median)
    else:  # iqm: the bootstrap is the expensive one; its target is the centre of a symmetric family
        assert statistic == "iqm"
        if family not in SYMMETRIC:
            pytest.skip("the population IQM of a skewed family is not what an n-seed IQM estimates")
        low, high = [], []
        for _ in range(3):  # 3 x 500 simulated claims, 1,000 resamples each, chunked to bound memory
            lo, hi = expanded_bootstrap_interval(draw(rng, (500, n)), iqm, rng, n_resamples=1_000)
            low.append(lo)
            high.append(hi)
        coverage = _coverage(np.concatenate(low), np.concatenate(high), mean)
    assert coverage >= MIN_COVERAGE, (
        f"{INTERVAL_METHODS[statistic].name} for {statistic} at {n} seeds covers {coverage:.3f} on {family}"
    )


@pytest.mark.parametrize("n", sorted({n for statistic, n in CELLS if statistic == "fraction"}))
def test_clopper_pearson_covers_every_p_exactly(n: int) -> None:
    """Exact coverage: sum over k of P(k | n, p) for the k whose interval holds p, on a fine grid of p."""
    k = np.arange(n + 1)
    indicators = (np.arange(n)[None, :] < k[:, None]).astype(float)  # row k: k ones among n seeds
    low, high = clopper_pearson_interval(indicators)
    p = np.linspace(0.001, 0.999, 999)
    weights = scipy_stats.binom.pmf(k[None, :], n, p[:, None])
    coverage = (weights * ((low[None, :] <= p[:, None]) & (p[:, None] <= high[None, :]))).sum(axis=1)
    assert coverage.min() >= 0.95 - 1e-9


def test_the_plain_percentile_bootstrap_would_not_cover() -> None:
    """Why the engine dropped it: at 5 seeds the percentile bootstrap of the mean covers ~83%, not 95%."""
    rng = np.random.default_rng(5)
    values = rng.normal(size=(2_000, 5))
    index = rng.integers(0, 5, size=(1_000, 5))
    means = values[..., index].mean(axis=-1)
    low, high = np.percentile(means, [2.5, 97.5], axis=-1)
    assert _coverage(low, high, 0.0) < 0.88


def test_probability_of_improvement_matches_mann_whitney() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.5, 1, 7), rng.normal(0, 1, 4)
    u = scipy_stats.mannwhitneyu(x, y).statistic
    assert probability_of_improvement(x, y) == pytest.approx(u / (7 * 4))
