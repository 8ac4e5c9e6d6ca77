"""Statistics and the verdict table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from reprolab.claims.checks import Verdict, apply_guards, evaluate
from reprolab.claims.schema import Expect, Guard
from reprolab.claims.stats import (
    INTERVAL_METHODS,
    confidence_interval,
    iqm,
    probability_of_improvement,
    probability_of_improvement_interval,
)


def expect(**kwargs: object) -> Expect:
    base = {"metric": "m", "statistic": "mean", "why": "test"}
    return Expect.model_validate(base | kwargs)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40))
def test_iqm_matches_scipy_trim_mean(values: list[float]) -> None:
    array = np.asarray(values)
    assert iqm(array) == pytest.approx(scipy_stats.trim_mean(array, 0.25), rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("statistic", ["mean", "iqm", "median", "paired_difference"])
def test_interval_is_seeded_and_brackets_the_point(statistic: str) -> None:
    values = np.random.default_rng(0).normal(size=12)
    first = confidence_interval(values, statistic, label="claim-a")
    assert first == confidence_interval(values, statistic, label="claim-a")
    assert first[0] < float(np.mean(values)) < first[1]


def test_probability_of_improvement_is_rliables_all_pairs_share() -> None:
    # 1 beats 0; 2 beats 0 and ties 2 (a half); 3 beats 0 and 2: 4.5 wins of 9 pairs
    treatment, control = np.array([1, 2, 3.0]), np.array([0, 2, 4.0])
    assert probability_of_improvement(treatment, control) == pytest.approx(4.5 / 9)
    assert probability_of_improvement(np.array([1.0, 2.0]), np.array([0.0, 0.5, 3.0])) == pytest.approx(4 / 6)


def test_unequal_seed_counts_are_a_clear_error() -> None:
    check = expect(statistic="paired_difference", of=["t", "c"], at_least=0.0)
    result = evaluate(check, {"t": [1.0, 2.0, 3.0], "c": [1.0, 2.0]}, [0, 1, 2], label="c")
    assert result.verdict == Verdict.ERROR and "arm 'c' has 2 value(s) for 3 seed(s)" in result.message


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


@pytest.mark.parametrize(
    ("statistic", "n", "needs"),
    [
        ("iqm", 5, "needs >= 6 seeds"),
        ("median", 3, "needs >= 6 seeds"),
        ("mean", 1, "needs >= 2 seeds"),
        ("max", 10, "no 95% interval for statistic 'max'"),
    ],
)
def test_ci95_without_a_covering_method_is_an_error(statistic: str, n: int, needs: str) -> None:
    values = {"": [float(i) for i in range(n)]}
    result = evaluate(
        expect(statistic=statistic, at_least=0.0, interval="ci95"), values, list(range(n)), label="c"
    )
    assert result.verdict == Verdict.ERROR and needs in result.message
    point = evaluate(expect(statistic=statistic, at_least=0.0), values, list(range(n)), label="c")
    assert point.verdict == Verdict.REPRODUCED and point.ci is None


def test_mean_ci_is_student_t() -> None:
    values = np.array([1.0, 2.0, 4.0])
    result = evaluate(expect(at_least=0.0, interval="ci95"), {"": values.tolist()}, [0, 1, 2], label="c")
    half = scipy_stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
    assert result.ci == pytest.approx((values.mean() - half, values.mean() + half))


def test_fraction_ci_is_clopper_pearson() -> None:
    check = expect(statistic="fraction", fraction={"above": 0.0}, at_least=0.5, interval="ci95")
    result = evaluate(check, {"": [1.0] * 10}, list(range(10)), label="c")
    assert result.ci == pytest.approx((0.025 ** (1 / 10), 1.0))  # 10 of 10: lower bound 0.692
    assert result.verdict == Verdict.REPRODUCED


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
    assert result.ci == pytest.approx((1.0, 1.0))
    assert result.probability_of_improvement == pytest.approx(
        15 / 25
    )  # all pairs (15 of 25 won), not matched seeds (5 of 5)


def test_probability_of_improvement_interval_is_seeded_and_holds_the_point() -> None:
    treatment, control = np.array([0.3, 0.5, 0.4, 0.9, 0.1]), np.array([0.2, 0.6, 0.1, 0.3, 0.0])
    first = probability_of_improvement_interval(treatment, control, label="c")
    assert first == probability_of_improvement_interval(treatment, control, label="c")
    assert first[0] <= probability_of_improvement(treatment, control) <= first[1]
    assert 0.0 <= first[0] <= first[1] <= 1.0


@pytest.mark.parametrize("statistic", ["mean", "iqm", "median", "paired_difference"])
@pytest.mark.parametrize(("value", "n"), [(0.1, 3), (0.1, 7), (0.7, 10), (1e-3, 6), (-2.3, 12)])
def test_equal_seeds_summarise_to_their_value_exactly(statistic: str, value: float, n: int) -> None:
    # a plain float mean of seven 0.1s is 0.09999999999999999 and their std ~1e-17: at_least 0.1 then failed
    # (point) or was inconclusive (ci95) although every seed gave exactly 0.1
    extra = {"of": ["t", "c"]} if statistic == "paired_difference" else {}
    per_arm = {"t": [value] * n, "c": [0.0] * n} if extra else {"": [value] * n}
    covered = n >= INTERVAL_METHODS[statistic].min_seeds
    for interval in ("point", "ci95") if covered else ("point",):
        result = evaluate(
            expect(statistic=statistic, interval=interval, at_least=value, **extra), per_arm, list(range(n)), label="c"
        )
        assert result.verdict == Verdict.REPRODUCED, (interval, result)
        assert result.observed == value and result.ci == ((value, value) if covered else None)


@pytest.mark.parametrize(
    ("statistic", "values", "interval", "message"),
    [
        ("mean", [1e308, 1.5e308], "point", "mean(m) >= -1 is inf"),  # passed as inf >= -1
        ("std", [1e308, -1e308], "point", "std(m) >= -1 is inf"),
        ("mean", [1e308, -1e308], "ci95", "the 95% interval is [-inf, inf]"),  # was inconclusive
        ("paired_difference", [1e308, 1e308], "point", "is inf"),  # 1e308 - (-1e308) per seed
    ],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_finite_seeds_whose_statistic_overflows_are_an_error(
    statistic: str, values: list[float], interval: str, message: str
) -> None:
    extra = {"of": ["t", "c"]} if statistic == "paired_difference" else {}
    per_arm = {"t": values, "c": [-v for v in values]} if extra else {"": values}
    result = evaluate(
        expect(statistic=statistic, interval=interval, at_least=-1.0, **extra), per_arm, [0, 1], label="c"
    )
    assert result.verdict == Verdict.ERROR and message in result.message, result


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_guard_whose_statistic_overflows_is_an_error() -> None:
    runs = {"": [{"m": 1.0, "h": 1e308}, {"m": 1.0, "h": 1.5e308}]}  # mean(h) = inf held `at_least: 0`
    guard = Guard.model_validate({"metric": "h", "at_least": 0.0, "why": "w"})
    result = apply_guards(evaluate(expect(at_least=0.5), {"": [1.0, 1.0]}, [0, 1], label="c"), [guard], runs, [0, 1])
    assert result.verdict == Verdict.ERROR and "mean(h) >= 0 is inf" in result.message
