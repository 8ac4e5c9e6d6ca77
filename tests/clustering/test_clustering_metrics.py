"""Clustering metrics: cross-checked against scikit-learn, properties, and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import normalized_mutual_info_score

from reprolab.diagnostics.clustering import (
    contingency,
    majority_accuracy,
    majority_mapping,
    merge_boost,
    mixture_entropy,
    nmi,
    purity,
    r_squared,
    reconstruction_error,
)

labelings = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 5), min_size=n, max_size=n),
        st.lists(st.integers(0, 12), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(labelings)
def test_nmi_matches_sklearn_arithmetic(pair):
    a, b = (np.array(x) for x in pair)
    assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-10)


@settings(max_examples=40, deadline=None)
@given(labelings, st.randoms(use_true_random=False))
def test_nmi_symmetric_bounded_and_permutation_invariant(pair, rnd):
    a, b = (np.array(x) for x in pair)
    perm = list(range(13))
    rnd.shuffle(perm)
    relabelled = np.array(perm)[b]
    value = nmi(a, b)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(nmi(b, a), abs=1e-12)
    assert value == pytest.approx(nmi(a, relabelled), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(labelings)
def test_purity_bounds_and_refinement(pair):
    a, b = (np.array(x) for x in pair)
    p = purity(a, b)
    assert 1.0 / len(a) <= p <= 1.0
    # one cluster per point is perfectly pure
    assert purity(a, np.arange(len(a))) == 1.0


def test_known_values():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert nmi(y, y) == pytest.approx(1.0)
    assert nmi(y, [5, 5, 7, 7, 9, 9]) == pytest.approx(1.0)
    assert nmi([0, 0, 0], [1, 1, 1]) == 1.0  # scikit-learn's convention for two trivial labelings
    assert purity(y, [0, 0, 0, 1, 1, 1]) == pytest.approx(4 / 6)
    assert contingency(y, [0, 0, 0, 1, 1, 1]).tolist() == [[2, 0], [1, 1], [0, 2]]
    assert majority_mapping(y, [0, 0, 0, 1, 1, 1]) == {0: 0, 1: 2}
    assert majority_accuracy(y, [0, 0, 0, 1, 1, 1], [0, 2, 1], [0, 1, 7]) == pytest.approx(2 / 3)
    assert mixture_entropy(np.full(8, 1 / 8)) == pytest.approx(math.log(8))
    assert mixture_entropy([1.0, 0.0]) == 0.0
    assert merge_boost(y, np.arange(6), [0, 0, 1, 1, 2, 2]) == pytest.approx(1.0 - nmi(y, np.arange(6)))


def test_r2_and_reconstruction_error():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    assert r_squared(x, x) == 1.0
    assert r_squared(x, np.broadcast_to(x.mean(axis=0), x.shape)) == pytest.approx(0.0, abs=1e-12)
    assert reconstruction_error(x, x + 0.5) == pytest.approx(4 * 0.25)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: nmi([[0, 1]], [0, 1]), ValueError, "labels_true must be a 1-D"),
        (lambda: nmi([0, 1], [0, 1, 1]), ValueError, "differ in length"),
        (lambda: nmi([], []), ValueError, "labels_true is empty"),
        (lambda: nmi(["a", "b"], [0, 1]), TypeError, "labels_true must hold integer"),
        (lambda: purity([0, 1], [0.5, 1.0]), ValueError, "labels_pred must hold integer"),
        (lambda: mixture_entropy([0.5, 0.2]), ValueError, "sum to 1"),
        (lambda: mixture_entropy([1.5, -0.5]), ValueError, "non-negative"),
        (lambda: mixture_entropy(np.ones((2, 2)) / 4), ValueError, "1-D"),
        (lambda: r_squared(np.ones(3), np.ones(3)), ValueError, "x must be a 2-D"),
        (lambda: r_squared(np.ones((3, 2)), np.ones((3, 3))), ValueError, "differ in shape"),
        (lambda: r_squared(np.ones((3, 2)), np.ones((3, 2))), ValueError, "zero variance"),
        (lambda: reconstruction_error(np.full((3, 2), np.nan), np.ones((3, 2))), ValueError, "finite"),
    ],
)
def test_bad_input_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@settings(max_examples=30, deadline=None)
@given(labelings, st.integers(-(10**12), 10**12), st.integers(1, 10**9))
def test_nmi_dense_and_sparse_label_paths_agree_with_sklearn(pair, offset, scale):
    """Small label ranges go through a presence table, sparse or negative ones through np.unique."""
    a, b = (np.array(x, dtype=np.int64) for x in pair)
    spread = b * scale + offset
    assert nmi(a, spread) == pytest.approx(normalized_mutual_info_score(a, spread), abs=1e-10)
    assert nmi(a, spread) == pytest.approx(nmi(a, b), abs=1e-12)
    assert np.array_equal(contingency(a, spread), contingency(a, b))


def test_string_parameters_are_one_error_naming_them_not_a_comparison_typeerror():
    # hard_fraction(threshold="0.5") used to fail with Python's "'<' not supported"; mixture_entropy("ab") with
    # numpy's "could not convert string to float".
    from reprolab.diagnostics.clustering import hard_fraction

    with pytest.raises(ValueError, match=r"threshold must be a number in \(0, 1\), got '0.5'"):
        hard_fraction(np.full((2, 2), 0.5), threshold="0.5")
    with pytest.raises(ValueError, match=r"weights must be a 1-D array of numbers"):
        mixture_entropy("ab")
