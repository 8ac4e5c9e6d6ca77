"""Source selection (URIEL-style and REAL similarity, top-k, Sinkhorn) and the merging diagnostics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprolab.diagnostics.merging import (
    baselines,
    merging_effect,
    predictor_accuracy,
    predictor_features,
    zs_self_ratio,
)
from reprolab.diagnostics.similarity import cka_matrix, compatibility_weights, linear_cka, tv_cosine_matrix
from reprolab.mergers.weights.selection import (
    accuracy_similarity,
    feature_similarity,
    select_sources,
    sinkhorn,
    top_k_per_row,
)

NXN = np.array([[0.9, 0.5, 0.2, 0.4], [0.6, 0.8, 0.3, 0.5], [0.1, 0.2, 0.7, 0.3], [0.5, 0.6, 0.4, 0.95]])


def test_feature_similarity_maps_cosine_and_zeroes_diagonal():
    s = feature_similarity(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    assert np.allclose(np.diag(s), 0) and np.isclose(s[0, 1], 0.5) and np.isclose(s[0, 2], 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        feature_similarity(np.array([[np.nan, 1.0]]))


def test_real_similarity_is_transposed_accuracy():
    s = accuracy_similarity(NXN)
    assert s[0, 1] == NXN[1, 0] and s[0, 0] == 0


def test_top_k_and_sinkhorn():
    s = top_k_per_row(accuracy_similarity(NXN), 2)
    assert (np.count_nonzero(s, axis=1) == 2).all()
    m = sinkhorn(s + 1e-3, 200)
    assert np.allclose(m.sum(0), 1, atol=1e-3) and np.allclose(m.sum(1), 1, atol=1e-2)
    with pytest.raises(ValueError, match="non-negative"):
        sinkhorn(-s)


def test_select_sources_exctar_and_inctar():
    s = accuracy_similarity(NXN)
    exc = select_sources(s, 0, 2, use_sinkhorn=False)
    assert exc.sources == [1, 3] and np.isclose(sum(exc.weights), 1) and 0 not in exc.sources
    inc = select_sources(s, 0, 3, include_target=True, use_sinkhorn=False)
    assert inc.sources[0] == 0 and len(inc.sources) == 3
    with pytest.raises(ValueError, match="num_languages"):
        select_sources(s, 0, 4)


def test_merging_effect_ratio_baselines():
    assert np.isclose(merging_effect(0.4832, [0.4602]), 0.023)
    assert np.isclose(zs_self_ratio(NXN, 0), np.mean([0.6, 0.1, 0.5]) / 0.9)
    b = baselines(NXN, 0, [1, 3], pretrained=0.1)
    assert (b.average_zero_shot, b.best_source, b.best_overall, b.self_accuracy) == (0.55, 0.6, 0.6, 0.9)
    with pytest.raises(ValueError, match="at least one"):
        merging_effect(0.5, [])
    with pytest.raises(ValueError, match="square"):
        zs_self_ratio(np.ones((2, 3)), 0)


def test_predictors():
    sim = np.array([[1, 0.2, 0.8, 0.5], [0.2, 1, 0.4, 0.6], [0.8, 0.4, 1, 0.3], [0.5, 0.6, 0.3, 1]])
    f = predictor_features(NXN, 0, [1, 2, 3], sim, ["x", "x", "y", "x"])
    assert np.isclose(f.diversity, 1 - np.mean([0.4, 0.6, 0.3]))
    assert np.isclose(f.v1, f.diversity / (1 + 10 * np.std([0.6, 0.1, 0.5])))
    assert np.isclose(f.coherence, 2 / 3)
    assert predictor_accuracy([0.1, 0.2, 0.3, 0.4], [-1, -1, 1, 1]) == 1.0
    assert predictor_accuracy([0.1, 0.2, 0.3, 0.4], [1, 1, -1, -1]) == 0.0


def test_tv_cosine_and_cka():
    a = {"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0])}
    b = {"w": torch.tensor([0.0, 2.0]), "b": torch.tensor([0.0])}
    m = tv_cosine_matrix([a, b, a])
    assert np.allclose(m, [[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    assert np.isclose(linear_cka(x, x @ q * 3.0), 1.0)  # invariant to rotation and scale
    assert linear_cka(x, rng.normal(size=(50, 4))) < 0.5
    assert np.allclose(np.diag(cka_matrix([x, x @ q])), 1)
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(x, x[:10])
    assert np.allclose(compatibility_weights([0.5, 0.5], np.array([[1, 0.2], [0.2, 1]])), [0.5, 0.5])
    w = compatibility_weights([0.4, 0.3, 0.3], np.array([[1, 0.9, 0.9], [0.9, 1, 0.0], [0.9, 0.0, 1]]))
    assert w[0] > 0.4 and np.isclose(sum(w), 1)


@pytest.mark.parametrize(
    "weights,compat,match",
    [
        ([0.0, 0.0], np.eye(2), "not all 0"),
        ([0.5, float("nan")], np.eye(2), "finite, non-negative"),
        ([0.7, -0.2], np.eye(2), "finite, non-negative"),
        ([], np.zeros((0, 0)), "non-empty 1-D"),
        ([0.5, 0.5], np.array([[1.0, np.nan], [np.nan, 1.0]]), "non-finite"),
    ],
)
def test_compatibility_weights_refuse_weights_that_would_give_nan(weights, compat, match):
    with pytest.raises(ValueError, match=match):
        compatibility_weights(weights, compat)


@pytest.mark.parametrize(
    "target,sources,match",
    [
        (-1, None, r"target must be a locale index in \[0, 4\), got -1"),
        (4, None, r"target must be a locale index"),
        (0, [], "sources is empty"),
        (0, [1, 9], r"sources must be locale indices in \[0, 4\), got 9"),
        (0, [-1], "sources must be locale indices"),
    ],
)
def test_zs_self_ratio_and_baselines_refuse_out_of_range_indices(target, sources, match):
    with pytest.raises(ValueError, match=match):
        zs_self_ratio(NXN, target, sources)
    with pytest.raises(ValueError, match=match):
        baselines(NXN, target, sources)


_SIM = np.array([[1, 0.2, 0.8, 0.5], [0.2, 1, 0.4, 0.6], [0.8, 0.4, 1, 0.3], [0.5, 0.6, 0.3, 1]])


@pytest.mark.parametrize(
    ("nxn", "sim", "regions", "match"),
    [
        (NXN, _SIM[:3, :3], ["x"] * 4, r"source_similarity must have the NxN matrix's shape \(4, 4\)"),
        (NXN, np.where(np.eye(4) > 0, np.nan, _SIM), ["x"] * 4, r"source_similarity contains non-finite"),
        (NXN, _SIM, ["x", "y"], r"regions must name one region per locale \(4\), got 2"),
        (np.where(np.eye(4) > 0, 0.0, NXN), _SIM, ["x"] * 4, r"target 0 has zero self accuracy"),
    ],
)
def test_predictor_features_checks_its_inputs(nxn, sim, regions, match):
    # A short similarity or regions list used to fail with IndexError; zero self accuracy gave an inf/NaN quality.
    with pytest.raises(ValueError, match=match):
        predictor_features(nxn, 0, [1, 2, 3], sim, regions)


def test_predictor_features_checks_target_and_sources():
    with pytest.raises(ValueError, match=r"sources must be locale indices in \[0, 4\)"):
        predictor_features(NXN, 0, [1, 7], _SIM, ["x"] * 4)


@pytest.mark.parametrize(
    ("scores", "effects", "threshold", "match"),
    [
        ([0.1, np.nan, 0.3], [1, -1, 1], None, r"scores contains NaN"),
        ([0.1, 0.2, 0.3], [1, np.nan, 1], None, r"effects contains NaN"),
        ([0.1, 0.2, 0.3], [1, -1, 1], float("nan"), r"threshold must be a finite number"),
        ([0.1, 0.2, 0.3], [1, -1, 1], "0.5", r"threshold must be a finite number"),
    ],
)
def test_predictor_accuracy_refuses_nan(scores, effects, threshold, match):
    # NaN scores used to compare False everywhere and give a made-up accuracy.
    with pytest.raises(ValueError, match=match):
        predictor_accuracy(scores, effects, threshold)


def test_sinkhorn_refuses_nan():
    # NaN used to pass through every normalisation silently.
    with pytest.raises(ValueError, match=r"sinkhorn's matrix contains non-finite values"):
        sinkhorn(np.array([[1.0, np.nan], [0.5, 1.0]]))


def test_select_sources_accepts_a_list_and_refuses_bad_matrices():
    # A list used to fail with AttributeError ('list' object has no attribute 'shape').
    s = accuracy_similarity(NXN)
    assert select_sources(s.tolist(), 0, 2) == select_sources(s, 0, 2)
    with pytest.raises(ValueError, match=r"the similarity matrix s must be square, got shape \(4,\)"):
        select_sources(s[0], 0, 2)
    with pytest.raises(ValueError, match=r"the similarity matrix s contains non-finite"):
        select_sources(np.where(s > 0.5, np.nan, s), 0, 2)


def test_top_k_per_row_refuses_1d_and_non_integer_k():
    # A 1-D array used to fail with numpy's IndexError (too many indices).
    with pytest.raises(ValueError, match=r"top_k_per_row's similarity matrix must be 2-D, got shape \(4,\)"):
        top_k_per_row(np.ones(4), 2)
    with pytest.raises(TypeError, match=r"top_k_per_row: k must be an int"):
        top_k_per_row(np.ones((2, 2)), 1.5)
    with pytest.raises(ValueError, match=r"top_k_per_row: k must be >= 1"):
        top_k_per_row(np.ones((2, 2)), 0)


def test_tv_cosine_matrix_refuses_mismatched_task_vectors():
    # Different keys used to raise a bare KeyError, different shapes torch's RuntimeError from stack.
    a = {"w": torch.ones(2), "b": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"task_vectors\[1\] is missing tensor\(s\) \['w'\] present in task_vectors\[0\]"):
        tv_cosine_matrix([a, {"b": torch.zeros(1)}])
    with pytest.raises(ValueError, match=r"tensor 'w': task_vectors\[1\] has shape \(3,\), task_vectors\[0\] \(2,\)"):
        tv_cosine_matrix([a, {"w": torch.ones(3), "b": torch.zeros(1)}])
    with pytest.raises(ValueError, match=r"task_vectors\[1\] has 3 elements, task_vectors\[0\] 2"):
        tv_cosine_matrix([torch.ones(2), torch.ones(3)])
    with pytest.raises(TypeError, match=r"task_vectors\[1\] is a dict"):
        tv_cosine_matrix([torch.ones(2), a])
