"""Component mergers: known structure recovered, properties over random responsibilities, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal

from reprolab.diagnostics.clustering import nmi
from reprolab.mergers.components import (
    MERGERS,
    BhattacharyyaMerger,
    CoAssignmentMerger,
    DEMPMerger,
    EntropyMerger,
    HungarianReference,
    RidgelineMerger,
    SymmetricKLMerger,
    make_merger,
)
from reprolab.mergers.components.coassignment import coassignment_similarity, kept_components
from reprolab.mergers.components.entropy import entropy_decrease_row
from reprolab.mergers.components.hennig import bhattacharyya_coefficient, ridgeline_ratio
from reprolab.mergers.components.kl import symmetric_kl


def _block_responsibilities(n_per: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Six components in two classes: points of class c spread their mass over components 3c..3c+2."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for c in range(2):
        mass = rng.dirichlet(np.ones(3), size=n_per)
        block = np.zeros((n_per, 6))
        block[:, 3 * c : 3 * c + 3] = 0.98 * mass
        block[:, 3 * (1 - c) : 3 * (1 - c) + 3] = 0.02 / 3
        rows.append(block)
        labels += [c] * n_per
    return np.vstack(rows), np.array(labels)


@pytest.mark.parametrize("name", ["coassignment", "entropy", "demp"])
def test_responsibility_mergers_recover_blocks(name):
    resp, labels = _block_responsibilities()
    merger = make_merger(name).fit(resp, 2)
    groups = merger.mapping_
    assert len(set(groups[:3])) == 1 and len(set(groups[3:])) == 1 and groups[0] != groups[3]
    pred = merger.predict(resp)
    assert abs(np.corrcoef(pred, labels)[0, 1]) == pytest.approx(1.0)


def test_geometry_mergers_recover_two_far_clusters():
    rng = np.random.default_rng(1)
    means = np.vstack([rng.normal(0, 0.1, (3, 2)), rng.normal(10, 0.1, (3, 2))])
    covs = np.stack([np.eye(2)] * 6)
    resp = np.full((12, 6), 1 / 6)
    for cls in (SymmetricKLMerger, BhattacharyyaMerger, RidgelineMerger):
        mapping = cls(means, covs).fit(resp, 2).mapping_
        assert len(set(mapping[:3])) == 1 and len(set(mapping[3:])) == 1 and mapping[0] != mapping[3]


def test_coassignment_keep_threshold_drops_components_that_never_win():
    resp = np.zeros((4000, 4))
    resp[:, 0] = 0.6
    resp[:, 1] = 0.3
    resp[:, 2] = 0.1
    resp[:2000, [0, 3]] = resp[:2000, [3, 0]]  # component 3 wins the first half, 0 the second
    keep = kept_components(resp)
    assert keep.tolist() == [True, False, False, True]  # floor(0.0005 * 4000) = 2 wins needed
    merger = CoAssignmentMerger().fit(resp, 2)
    assert merger.mapping_[1] == -1 and merger.mapping_[2] == -1
    s = coassignment_similarity(resp)
    np.testing.assert_allclose(np.diag(s), 1.0)


responsibilities = st.tuples(st.integers(5, 40), st.integers(2, 9), st.integers(0, 2**31 - 1)).map(
    lambda t: np.random.default_rng(t[2]).dirichlet(np.full(t[1], 0.3), size=t[0])
)


@settings(max_examples=25, deadline=None)
@given(responsibilities, st.integers(1, 4))
def test_mergers_map_into_at_most_n_groups(resp, n_groups):
    for name in ("coassignment", "entropy", "demp"):
        merger = make_merger(name).fit(resp, n_groups)
        kept = merger.mapping_[merger.mapping_ >= 0]
        assert merger.mapping_.shape == (resp.shape[1],)
        assert kept.size >= 1 and kept.max() < n_groups
        assert set(kept.tolist()) == set(range(merger.n_groups_))
        pred = merger.predict(resp[::-1])  # any split with the same components
        assert pred.min() >= 0 and pred.max() < n_groups


@settings(max_examples=25, deadline=None)
@given(responsibilities)
def test_entropy_decrease_is_non_negative(resp):
    for i in range(resp.shape[1]):
        row = entropy_decrease_row(resp, i)
        assert np.all(np.delete(row, i) >= -1e-9)


def test_symmetric_kl_and_bhattacharyya_closed_forms():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 3, 3))
    covs = np.einsum("kij,klj->kil", a, a) + np.eye(3)
    means = rng.normal(size=(2, 3))
    # KL by Monte Carlo against the closed form
    x = rng.multivariate_normal(means[0], covs[0], size=200_000)
    kl01 = np.mean(
        multivariate_normal(means[0], covs[0]).logpdf(x) - multivariate_normal(means[1], covs[1]).logpdf(x)
    )
    y = rng.multivariate_normal(means[1], covs[1], size=200_000)
    kl10 = np.mean(
        multivariate_normal(means[1], covs[1]).logpdf(y) - multivariate_normal(means[0], covs[0]).logpdf(y)
    )
    skl = symmetric_kl(means, covs)
    assert skl[0, 1] == pytest.approx(kl01 + kl10, rel=0.03)
    assert skl[0, 0] == pytest.approx(0.0, abs=1e-9)
    # Bhattacharyya: identical Gaussians -> 1; 1-D closed form
    assert bhattacharyya_coefficient(means[0], covs[0], means[:1], covs[:1])[0] == pytest.approx(1.0)
    bc = bhattacharyya_coefficient(np.zeros(1), np.eye(1), np.ones((1, 1)), 4 * np.eye(1)[None])[0]
    # 1-D: d_B = (mu1 - mu2)^2 / (4 (s1 + s2)) + 1/2 log((s1 + s2) / (2 sqrt(s1 s2)))
    expected = np.exp(-(1 / 4 * 1 / 5 + 0.5 * np.log(5 / 4)))
    assert bc == pytest.approx(expected)


def test_hungarian_reference_maps_only_n_classes_components():
    resp, labels = _block_responsibilities()
    ref = HungarianReference(labels).fit(resp, 2)
    assert (ref.mapping_ >= 0).sum() == 2
    pred = ref.predict(resp)
    assert set(np.unique(pred)) <= {-1, 0, 1}
    assert np.all(pred[pred >= 0] == labels[pred >= 0])


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: CoAssignmentMerger().fit(np.ones((3, 2)), 1), ValueError, "rows must sum to 1"),
        (lambda: CoAssignmentMerger().fit(-np.eye(2), 1), ValueError, "non-negative"),
        (lambda: CoAssignmentMerger().fit(np.ones(3), 1), ValueError, "resp must be a non-empty 2-D"),
        (lambda: CoAssignmentMerger().fit("abc", 1), TypeError, "resp must be a 2-D array"),
        (lambda: CoAssignmentMerger().fit(np.eye(3), 2.0), TypeError, "n_groups must be an int"),
        (lambda: CoAssignmentMerger().fit(np.eye(3), 0), ValueError, "n_groups must be >= 1"),
        (lambda: CoAssignmentMerger(min_fraction=2.0), ValueError, "min_fraction"),
        (lambda: EntropyMerger().predict(np.eye(3)), RuntimeError, "not fitted"),
        (lambda: DEMPMerger().fit(np.eye(3), 2).predict(np.eye(4)), ValueError, "fitted with 3"),
        (
            lambda: SymmetricKLMerger(np.zeros((2, 2)), -np.stack([np.eye(2)] * 2)),
            ValueError,
            "positive definite",
        ),
        (lambda: SymmetricKLMerger(np.zeros((2, 2)), np.eye(2)), ValueError, "covs must have shape"),
        (
            lambda: BhattacharyyaMerger(np.zeros((2, 2)), np.stack([np.eye(2)] * 2)).fit(np.eye(3), 1),
            ValueError,
            "3 components but 2",
        ),
        (
            lambda: HungarianReference([0, 1, 2]).fit(np.eye(3), 2),
            ValueError,
            "must equal the number of classes",
        ),
        (
            lambda: HungarianReference([0, 1, 0]).fit(np.eye(3), 2).predict(np.eye(4)),
            ValueError,
            "4 components but the merger was fitted with 3",
        ),
        (
            lambda: HungarianReference([0, 1, 0]).fit(np.eye(3), 2).predict(np.eye(2)),
            ValueError,
            "2 components but the merger was fitted with 3",
        ),
        (
            lambda: CoAssignmentMerger(min_fraction=0.9).fit(np.tile(np.eye(4), (5, 1)), 2),
            ValueError,
            r"min_fraction=0.9: no component wins the 18 of 20 points",
        ),
        (lambda: make_merger("ward"), ValueError, "unknown merger"),
        (lambda: make_merger("kl"), ValueError, "needs gaussians"),
    ],
)
def test_bad_input_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def _partition(mapping: np.ndarray) -> set[frozenset[int]]:
    """The merge as a set of component groups (group ids are arbitrary), dropped components apart."""
    return {frozenset(np.flatnonzero(mapping == g).tolist()) for g in np.unique(mapping)}


def _all_mergers(resp: np.ndarray, means: np.ndarray, covs: np.ndarray, labels: np.ndarray):
    context = {"gaussians": (means, covs), "labels": labels}
    return {name: (lambda n=name, c=context: make_merger(n, **c)) for name in MERGERS}


gaussian_problems = st.tuples(st.integers(12, 40), st.integers(3, 7), st.integers(0, 2**31 - 1))


@settings(max_examples=20, deadline=None)
@given(gaussian_problems, st.integers(1, 3), st.randoms(use_true_random=False))
def test_every_merger_is_invariant_to_permuting_components(problem, n_groups, rnd):
    """Relabelling the components permutes the mapping and changes no partition or prediction."""
    n, k, seed = problem
    rng = np.random.default_rng(seed)
    resp = rng.dirichlet(np.full(k, 0.5), size=n)
    means = rng.normal(size=(k, 2))
    a = rng.normal(size=(k, 2, 2))
    covs = np.einsum("kij,klj->kil", a, a) + 0.5 * np.eye(2)
    labels = rng.integers(0, n_groups, size=n)
    labels[:n_groups] = np.arange(n_groups)  # every class occurs (the Hungarian reference needs it)
    perm = np.array(rnd.sample(range(k), k))
    plain = _all_mergers(resp, means, covs, labels)
    permuted = _all_mergers(resp[:, perm], means[perm], covs[perm], labels)
    for name in MERGERS:
        a_fit = plain[name]().fit(resp, n_groups)
        b_fit = permuted[name]().fit(resp[:, perm], n_groups)
        if name == "hungarian":  # a maximum matching can be tied: its value, not its choice, is invariant
            hits = [np.sum(m.predict(r) == labels) for m, r in ((a_fit, resp), (b_fit, resp[:, perm]))]
            assert hits[0] == hits[1]
            continue
        # component perm[j] of the original is component j of the permuted problem
        assert _partition(a_fit.mapping_) == {
            frozenset(perm[list(g)].tolist()) for g in _partition(b_fit.mapping_)
        }, name
        pa, pb = a_fit.predict(resp), b_fit.predict(resp[:, perm])
        assert nmi(pa, pb) == pytest.approx(1.0), name


@settings(max_examples=25, deadline=None)
@given(responsibilities, st.integers(1, 12))
def test_mapping_covers_every_component(resp, n_groups):
    """Every component gets a group in [0, n_groups) or -1; only co-assignment's keep filter (components
    that win no point) and the label-matching reference may leave one out, and the others never do."""
    k = resp.shape[1]
    means = np.arange(k, dtype=float)[:, None] * np.ones((1, 2))
    covs = np.stack([np.eye(2)] * k)
    for name in ("coassignment", "kl", "entropy", "demp", "bhattacharyya", "ridgeline"):
        merger = make_merger(name, gaussians=(means, covs)).fit(resp, n_groups)
        mapping = merger.mapping_
        assert mapping.shape == (k,)
        assert np.all((mapping >= 0) & (mapping < n_groups) | (mapping == -1)), name
        if name == "coassignment":
            dropped = ~kept_components(resp)
            assert np.array_equal(mapping == -1, dropped)
        else:
            assert np.all(mapping >= 0), name
        assert merger.n_groups_ == len(set(mapping[mapping >= 0].tolist()))
        assert merger.n_groups_ <= min(n_groups, k)


@pytest.mark.parametrize("name", ["coassignment", "entropy", "demp", "kl", "bhattacharyya", "ridgeline"])
def test_n_groups_at_least_surviving_components_keeps_each_component_alone(name):
    """n_classes >= surviving components: documented handling is one group per surviving component."""
    resp, _ = _block_responsibilities()
    means = np.arange(6, dtype=float)[:, None] * np.ones((1, 2))
    merger = make_merger(name, gaussians=(means, np.stack([np.eye(2)] * 6))).fit(resp, 6)
    assert sorted(merger.mapping_.tolist()) == list(range(6))
    wide = make_merger(name, gaussians=(means, np.stack([np.eye(2)] * 6))).fit(resp, 10)
    assert sorted(wide.mapping_.tolist()) == list(range(6)) and wide.n_groups_ == 6


def test_component_without_mass_is_dropped_by_coassignment_and_kept_by_the_others():
    """A component that lost all its mass (zero responsibility column) wins no point: co-assignment drops it
    (mapping -1, its points go to the other groups); the responsibility-only mergers still place it."""
    resp, _ = _block_responsibilities()
    dead = np.hstack([resp, np.zeros((resp.shape[0], 1))])
    co = CoAssignmentMerger().fit(dead, 2)
    assert co.mapping_[-1] == -1 and np.all(co.mapping_[:-1] >= 0)
    assert np.isfinite(coassignment_similarity(dead)).all()
    for name in ("entropy", "demp"):
        mapping = make_merger(name).fit(dead, 2).mapping_
        assert np.all(mapping >= 0)


def test_rows_not_summing_to_one_name_the_row():
    resp = np.full((5, 3), 1 / 3)
    resp[3] = [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match=r"resp rows must sum to 1.*row 3 sums to 1\.5"):
        CoAssignmentMerger().fit(resp, 2)
    with pytest.raises(ValueError, match="resp rows must sum to 1"):
        EntropyMerger().fit(resp.astype(np.float32), 2)


def test_ridgeline_ratio_unimodal_close_and_bimodal_far_pairs():
    """1-D equal-variance pair: unimodal iff |m1 - m2| <= 2 sigma (equal weights), so the ratio is 1 there,
    and for a far pair it is the density dip between the two modes over a mode (exp(-d^2/8)-like, small)."""
    c = np.eye(1)[None]
    close = ridgeline_ratio(1.0, np.zeros(1), np.eye(1), np.ones(1), np.full((1, 1), 1.5), c)
    far = ridgeline_ratio(1.0, np.zeros(1), np.eye(1), np.ones(1), np.full((1, 1), 6.0), c)
    assert close[0] == pytest.approx(1.0)
    dip = 2 * np.exp(-(3.0**2) / 2) / (1 + np.exp(-(6.0**2) / 2))  # f(3) / f(0) for the mixture
    assert far[0] == pytest.approx(dip, rel=1e-6)
    with pytest.raises(ValueError, match="n_grid"):
        RidgelineMerger(np.zeros((2, 1)), np.stack([np.eye(1)] * 2), n_grid=2)


def test_coassignment_min_fraction_of_the_wrong_type_is_one_error_naming_it():
    # min_fraction="a" used to fail with Python's "'<=' not supported between 'float' and 'str'".
    with pytest.raises(TypeError, match=r"min_fraction must be a number, got 'a'"):
        CoAssignmentMerger(min_fraction="a")
