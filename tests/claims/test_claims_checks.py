"""Statistics and the verdict table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from reprolab.claims.checks import Verdict, evaluate
from reprolab.claims.schema import Expect
from reprolab.claims.stats import bootstrap_ci, iqm, probability_of_improvement


def expect(**kwargs: object) -> Expect:
    base = {"metric": "m", "statistic": "mean", "why": "test"}
    return Expect.model_validate(base | kwargs)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40))
def test_iqm_matches_scipy_trim_mean(values: list[float]) -> None:
    array = np.asarray(values)
    assert iqm(array) == pytest.approx(scipy_stats.trim_mean(array, 0.25), rel=1e-9, abs=1e-6)


def test_bootstrap_is_seeded_and_brackets_the_point() -> None:
    values = np.random.default_rng(0).normal(size=12)
    first = bootstrap_ci(values, lambda v: v.mean(axis=-1), label="claim-a")
    assert first == bootstrap_ci(values, lambda v: v.mean(axis=-1), label="claim-a")
    assert first[0] < values.mean() < first[1]
    assert bootstrap_ci(np.array([3.0]), lambda v: v.mean(axis=-1), label="x") == (3.0, 3.0)


def test_probability_of_improvement_counts_ties_half() -> None:
    assert probability_of_improvement(np.array([1, 2, 3.0]), np.array([0, 2, 4.0])) == pytest.approx(0.5)


def test_point_interval_verdicts() -> None:
    check = expect(at_least=0.5)
    assert evaluate(check, {"": [0.6]}, [0], label="c").verdict == Verdict.REPRODUCED
    assert evaluate(check, {"": [0.4]}, [0], label="c").verdict == Verdict.NOT_REPRODUCED


def test_ci95_verdicts_cover_all_four_cases() -> None:
    seeds = list(range(10))
    tight_high = [1.0 + 0.01 * i for i in range(10)]
    tight_low = [-1.0 - 0.01 * i for i in range(10)]
    straddle_pass = [0.9, 1.1, -0.5, 2.0, 0.2, 0.8, 0.1, 1.5, -0.2, 0.6]  # mean 0.65, CI crosses 0.5
    straddle_fail = [x - 0.3 for x in straddle_pass]  # mean 0.35
    check = expect(at_least=0.5, interval="ci95")
    assert evaluate(check, {"": tight_high}, seeds, label="c").verdict == Verdict.REPRODUCED
    assert evaluate(check, {"": tight_low}, seeds, label="c").verdict == Verdict.REFUTED
    assert evaluate(check, {"": straddle_pass}, seeds, label="c").verdict == Verdict.INCONCLUSIVE
    assert evaluate(check, {"": straddle_fail}, seeds, label="c").verdict == Verdict.NOT_REPRODUCED


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_is_an_error_naming_the_seed(bad: float) -> None:
    result = evaluate(expect(at_most=1e9), {"": [0.0, bad, 0.0]}, [4, 5, 6], label="c")
    assert result.verdict == Verdict.ERROR and "seed 5" in result.message


def test_few_seeds_warn_for_ci() -> None:
    result = evaluate(expect(at_least=0.0, interval="ci95"), {"": [1.0, 2.0, 3.0]}, [0, 1, 2], label="c")
    assert result.n_seeds == 3 and any("5" in w for w in result.warnings)


def test_fraction_and_approx_and_between() -> None:
    values = {"": [0.1, 0.2, -0.3, 0.4]}
    frac = expect(statistic="fraction", fraction={"above": 0.0}, approx={"value": 0.75, "abs": 0.01})
    result = evaluate(frac, values, [0, 1, 2, 3], label="c")
    assert result.observed == pytest.approx(0.75) and result.verdict == Verdict.REPRODUCED
    assert result.samples == [1.0, 1.0, 0.0, 1.0]  # what gets plotted: the per-seed indicators
    assert (
        evaluate(expect(between=[0.0, 0.05]), values, [0, 1, 2, 3], label="c").verdict
        == Verdict.NOT_REPRODUCED
    )
    rel = expect(approx={"value": 0.1, "rel": 0.05})
    assert evaluate(rel, values, [0, 1, 2, 3], label="c").verdict == Verdict.REPRODUCED


def test_paired_difference_is_per_seed() -> None:
    check = expect(statistic="paired_difference", of=["t", "c"], at_least=0.9, interval="ci95")
    treatment = [5.0, -3.0, 10.0, 0.0, 7.0]
    control = [x - 1.0 for x in treatment]  # huge spread across seeds, constant paired gain
    result = evaluate(check, {"t": treatment, "c": control}, list(range(5)), label="c")
    assert result.verdict == Verdict.REPRODUCED
    assert result.ci == pytest.approx((1.0, 1.0)) and result.probability_of_improvement == 1.0
