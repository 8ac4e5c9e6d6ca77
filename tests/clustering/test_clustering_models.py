"""Mixture models: scikit-learn cross-check, EM monotonicity, kernel exactness, invariances, errors.

Shapes are kept small and shared (module fixtures) so that each jitted function compiles once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from reprolab.models.mixtures import (
    FullInteractionMixture,
    GaussianMixture,
    HierarchicalMixture,
    MixtureOfFactorAnalyzers,
    NotFittedError,
)
from reprolab.models.mixtures._factor import factor_posterior
from reprolab.models.mixtures.hmog import _components, _log_joint, _whiten_jit


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(240, n_features=6, centers=4, cluster_std=1.0, random_state=0)
    return X.astype(np.float32), y


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gmm_matches_sklearn(blobs, covariance_type):
    X, _ = blobs
    ours = GaussianMixture(4, covariance_type=covariance_type, n_iter=15, random_state=3).fit(X)
    ref = SkGaussianMixture(
        4, covariance_type=covariance_type, max_iter=15, tol=0.0, reg_covar=1e-6, n_init=1, random_state=3
    )
    with pytest.warns(Warning):  # scikit-learn warns that 15 iterations did not "converge" at tol=0
        ref.fit(X.astype(np.float64))
    assert ours.score(X) == pytest.approx(ref.score(X), abs=1e-3)
    assert np.abs(ours.predict_proba(X) - ref.predict_proba(X)).max() < 1e-3
    assert np.abs(ours.means_ - ref.means_).max() < 1e-3


def test_factor_kernel_is_exact_against_dense_gaussian():
    rng = np.random.default_rng(0)
    k, d, latent = 3, 5, 2
    X = rng.normal(size=(7, d)).astype(np.float32)
    means = rng.normal(size=(k, d)).astype(np.float32)
    loads = rng.normal(size=(k, d, latent)).astype(np.float32)
    psi = rng.uniform(0.2, 1.0, size=(k, d)).astype(np.float32)
    # jitted, as every caller runs it: one compilation instead of one per eager op
    post = jax.jit(factor_posterior)(X, means, loads, psi)
    for j in range(k):
        cov = loads[j] @ loads[j].T + np.diag(psi[j])
        expected = multivariate_normal(means[j], cov).logpdf(X)
        np.testing.assert_allclose(np.asarray(post.log_prob[:, j]), expected, rtol=1e-4, atol=1e-4)
        # posterior of z given x: Cov = (I + A^T Psi^-1 A)^-1, mean = Cov A^T Psi^-1 (x - mu)
        m = np.eye(latent) + loads[j].T @ np.diag(1 / psi[j]) @ loads[j]
        np.testing.assert_allclose(np.asarray(post.cov[j]), np.linalg.inv(m), rtol=1e-4, atol=1e-5)
        mean = (np.linalg.inv(m) @ loads[j].T @ np.diag(1 / psi[j]) @ (X - means[j]).T).T
        np.testing.assert_allclose(np.asarray(post.mean[j]), mean, rtol=1e-3, atol=1e-4)


@pytest.fixture(scope="module")
def fitted_mfa(blobs):
    return MixtureOfFactorAnalyzers(6, 2, n_iter=30, random_state=1).fit(blobs[0])


@pytest.fixture(scope="module")
def fitted_hmog(blobs):
    return HierarchicalMixture(6, 2, trainer="em", n_iter=30, random_state=1).fit(blobs[0])


@pytest.mark.parametrize("name", ["fitted_mfa", "fitted_hmog"])
def test_exact_em_never_decreases_likelihood(request, name):
    history = request.getfixturevalue(name).loglik_history_
    assert history.shape == (30,)
    assert np.all(np.diff(history) > -1e-3 * np.abs(history[:-1]).clip(1.0))
    assert history[-1] > history[0]


@pytest.mark.parametrize("name", ["fitted_mfa", "fitted_hmog"])
def test_estimator_api(request, name, blobs):
    model = request.getfixturevalue(name)
    X, _ = blobs
    proba = model.predict_proba(X)
    assert proba.shape == (240, 6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(model.predict(X), proba.argmax(axis=1))
    assert model.score(X) == pytest.approx(float(np.mean(model.score_samples(X))))
    assert model.weights_.sum() == pytest.approx(1.0, abs=1e-5)
    assert model.reconstruct(X).shape == X.shape


def test_same_seed_same_numbers_different_seed_different(blobs, fitted_mfa):
    X, _ = blobs
    again = MixtureOfFactorAnalyzers(6, 2, n_iter=30, random_state=1).fit(X)
    np.testing.assert_array_equal(again.predict_proba(X), fitted_mfa.predict_proba(X))
    other = MixtureOfFactorAnalyzers(6, 2, n_iter=30, random_state=2).fit(X)
    assert not np.array_equal(other.params_["loads"], fitted_mfa.params_["loads"])


def test_hmog_whitening_keeps_likelihood_and_whitens_prior(fitted_hmog, blobs):
    X = jnp.asarray(blobs[0])
    p = dict(fitted_hmog.params_)
    p["m"] = np.asarray(p["m"]) * 2.0 + 0.5  # un-whiten on purpose
    w = _whiten_jit(p)  # jax.jit(_whiten), already compiled for this shape by the fitted_hmog fit
    np.testing.assert_allclose(
        np.asarray(_log_joint(w, X)), np.asarray(_log_joint(p, X)), rtol=1e-4, atol=1e-3
    )
    weights = np.exp(np.asarray(w["log_w"]))
    m, chol = np.asarray(w["m"]), np.asarray(w["chol"])
    mean = weights @ m
    cov = sum(wk * (c @ c.T + np.outer(mk, mk)) for wk, mk, c in zip(weights, m, chol, strict=True))
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(cov, np.eye(2), atol=1e-3)


def test_full_model_with_zero_offsets_equals_hierarchical(fitted_hmog):
    p = dict(fitted_hmog.params_)
    k, latent = p["m"].shape
    d = p["W"].shape[0]
    full = dict(p, dW=jnp.zeros((k, d, latent)), c=jnp.zeros((k, d)))
    for a, b in zip(_components(p), _components(full), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_gradient_trainers_improve_likelihood(blobs):
    X, _ = blobs
    for model in (
        HierarchicalMixture(6, 2, trainer="gradient", n_iter=8, steps_per_epoch=5, learning_rate=0.05, ent_reg=1e-3, l2_reg=1e-4, random_state=0),
        FullInteractionMixture(6, 2, n_iter=8, steps_per_epoch=5, learning_rate=0.05, random_state=0),
    ):  # fmt: skip
        history = model.fit(X).loglik_history_
        assert history[-1] > history[0]
        assert model.weights_.min() > 0.0


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: GaussianMixture(0), ValueError, "n_components must be >= 1"),
        (lambda: GaussianMixture(2, covariance_type="tied"), ValueError, "covariance_type"),
        (lambda: GaussianMixture(2.5), TypeError, "n_components must be an int"),
        (lambda: MixtureOfFactorAnalyzers(2, 6), ValueError, "latent_dim=6 must be smaller"),
        (lambda: MixtureOfFactorAnalyzers(2, 2, min_variance=0.0), ValueError, "min_variance"),
        (
            lambda: HierarchicalMixture(2, 2, interaction="full", trainer="em"),
            ValueError,
            "trainer='gradient'",
        ),
        (lambda: HierarchicalMixture(2, 2, trainer="sgd"), ValueError, "trainer must be one of"),
        (lambda: HierarchicalMixture(2, 2, learning_rate=-1.0), ValueError, "learning_rate"),
        (lambda: HierarchicalMixture(4, 2, min_weight=0.3), ValueError, "min_weight"),
        (lambda: HierarchicalMixture(4, 2, trainer="gradient", min_prob=0.3), ValueError, "min_prob"),
        (lambda: HierarchicalMixture(4, 2, trainer="gradient", obs_min_var=0.0), ValueError, "obs_min_var"),
        (lambda: HierarchicalMixture(4, 2, trainer="gradient", grad_clip=-1.0), ValueError, "grad_clip"),
        (lambda: GaussianMixture(2, random_state=-1), TypeError, "random_state"),
        (lambda: GaussianMixture(500), ValueError, "exceeds the number of samples"),
    ],
)
def test_bad_hyperparameters(blobs, make, exc, match):
    with pytest.raises(exc, match=match):
        make().fit(blobs[0])


def test_bad_data(blobs, fitted_mfa):
    X, _ = blobs
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        GaussianMixture(2).fit(bad)
    with pytest.raises(ValueError, match="X must be 2-D"):
        GaussianMixture(2).fit(X[:, 0])
    with pytest.raises(TypeError, match="X must be numeric"):
        GaussianMixture(2).fit(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="X has 5 features but the model was fitted with 6"):
        fitted_mfa.predict_proba(X[:, :5])
    with pytest.raises(NotFittedError, match="not fitted"):
        MixtureOfFactorAnalyzers(2, 2).predict(X)


def test_inf_and_k_above_n_are_clear_errors(blobs):
    X, _ = blobs
    bad = X.copy()
    bad[3, 2] = np.inf
    for model in (MixtureOfFactorAnalyzers(2, 2), HierarchicalMixture(2, 2)):
        with pytest.raises(ValueError, match="X contains NaN or infinite"):
            model.fit(bad)
        with pytest.raises(ValueError, match="n_components=300 exceeds the number of samples 240"):
            type(model)(300, 2).fit(X)


def test_constant_features_are_handled_by_the_variance_floor(blobs):
    """A constant pixel (digits and MNIST have many) has zero variance: the noise floor ``min_variance``
    keeps the likelihood finite instead of infinite (documented handling, not an error).

    Two of the six features are made constant, so every model has the shapes of the module's other fits
    (fitted_mfa, fitted_hmog, the diagonal scikit-learn cross-check) and reuses their compilations."""
    X, _ = blobs
    Xc = X.copy()
    Xc[:, -2:] = 0.5
    for model in (
        MixtureOfFactorAnalyzers(6, 2, n_iter=5, random_state=0),
        HierarchicalMixture(6, 2, n_iter=5, random_state=0),
        GaussianMixture(4, covariance_type="diag", n_iter=15, reg_covar=1e-3, random_state=0),
    ):
        model.fit(Xc)
        assert np.isfinite(model.score(Xc))
        proba = model.predict_proba(Xc)
        assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_component_that_loses_all_mass_stays_finite(blobs, fitted_mfa, fitted_hmog):
    """A component far from every point gets zero responsibility: its weight drops to ~0 and every
    parameter stays finite (weights are floored, the regression is ridged, variances floored)."""
    from reprolab.models.mixtures import hmog, mfa

    X = jnp.asarray(blobs[0])
    p = dict(fitted_mfa.params_)  # the fixtures' shapes: the jitted EM steps are already compiled
    p["means"] = np.asarray(p["means"]).copy()
    p["means"][0] = 1e4
    new, loglik = mfa._em_step_jit(p, X, 1e-3)
    assert np.isfinite(float(loglik)) and all(np.all(np.isfinite(np.asarray(v))) for v in new.values())
    assert float(np.exp(np.asarray(new["log_w"])[0])) < 1e-6
    q = dict(fitted_hmog.params_)
    q["m"] = np.asarray(q["m"]).copy()
    q["m"][0] = 1e3
    new, loglik = hmog._em_step_jit(q, X, 1e-3)
    assert np.isfinite(float(loglik)) and all(np.all(np.isfinite(np.asarray(v))) for v in new.values())
    assert float(np.exp(np.asarray(new["log_w"])[0])) < 1e-6


def test_summarise_equals_the_separate_predictions(blobs, fitted_mfa, fitted_hmog):
    X = blobs[0]
    for model in (fitted_mfa, fitted_hmog):
        resp, log_px, recon = model.summarise(X)
        np.testing.assert_allclose(resp, model.predict_proba(X), atol=1e-5)
        np.testing.assert_allclose(log_px, model.score_samples(X), rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(recon, model.reconstruct(X), rtol=1e-5, atol=1e-5)
