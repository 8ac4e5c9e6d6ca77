"""The MFA gradient trainer (note 000's recipe): bounded statistics, natural-coordinate gradient, determinism."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import make_blobs

from reprolab.diagnostics.clustering import hard_fraction
from reprolab.models.mixtures import MixtureOfFactorAnalyzers
from reprolab.models.mixtures import _mfa_gradient as g
from reprolab.models.mixtures._gradient import ComponentStatistics

K, D, L = 3, 5, 2


def _stats(seed: int = 0) -> ComponentStatistics:
    rng = np.random.default_rng(seed)
    w = np.array([0.7, 0.29995, 0.00005])
    ex = rng.normal(size=(K, D))
    exx = ex**2 + rng.uniform(0.0, 0.3, size=(K, D))
    exx[0, 0] = ex[0, 0] ** 2 + 1e-9  # a variance below the floor
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return ComponentStatistics(
        f32(w), f32(ex), f32(exx), f32(rng.normal(size=(K, D, L)) * 0.1), f32(rng.normal(size=(K, L))),
        f32(np.stack([np.eye(L) * 2.0] * K)),
    )  # fmt: skip


def test_bound_statistics_floors_clips_renormalises_and_resets_latents():
    raw = _stats()
    b = g.bound_statistics(raw, obs_min_var=1e-3, min_prob=1e-2)
    w = np.asarray(b.weights)
    assert np.isclose(w.sum(), 1.0, atol=1e-6) and w.min() >= 1e-2 / (1 + 1e-2) - 1e-7
    assert np.all(np.asarray(b.exx - b.ex**2) >= 1e-3 - 1e-6)
    np.testing.assert_allclose(np.asarray(b.exx)[1:], np.asarray(raw.exx)[1:], rtol=1e-6)  # above the floor
    assert np.all(np.asarray(b.ez) == 0.0)
    np.testing.assert_array_equal(np.asarray(b.ezz), np.stack([np.eye(L)] * K))
    np.testing.assert_array_equal(np.asarray(b.ex), np.asarray(raw.ex))
    np.testing.assert_array_equal(np.asarray(b.exz), np.asarray(raw.exz))


def test_natural_gradient_is_model_minus_bounded_statistics():
    stats = g.bound_statistics(_stats(1), 1e-5, 1e-4)
    rng = np.random.default_rng(2)
    params = {
        "log_w": jnp.log(jnp.asarray([0.2, 0.3, 0.5], jnp.float32)),
        "means": jnp.asarray(rng.normal(size=(K, D)), jnp.float32),
        "loads": jnp.asarray(rng.normal(size=(K, D, L)) * 0.1, jnp.float32),
        "psi": jnp.asarray(rng.uniform(0.2, 1.0, size=(K, D)), jnp.float32),
    }
    theta = g.to_natural(params)
    back = g.from_natural(theta, 1e-5)
    for key in params:
        np.testing.assert_allclose(np.asarray(back[key]), np.asarray(params[key]), rtol=1e-5, atol=1e-6)
    grads = jax.grad(g.expected_nll)(theta, stats, 1e-5)
    w = np.asarray(stats.weights)[:, None]
    # d/d eta: weight * (model mean - bounded posterior mean), since E[z] is reset to 0
    np.testing.assert_allclose(
        np.asarray(grads["eta"]), w * (np.asarray(params["means"]) - np.asarray(stats.ex)), atol=1e-5
    )
    # d/d logits: model weights - bounded posterior weights
    np.testing.assert_allclose(
        np.asarray(grads["logits"]), np.asarray([0.2, 0.3, 0.5]) - np.asarray(stats.weights), atol=1e-6
    )


def test_the_bounded_m_step_is_a_stationary_point():
    raw = _stats(3)
    stats = g.bound_statistics(raw._replace(exz=raw.exz * 0.05), 1e-2, 1e-4)
    ex, exz = np.asarray(stats.ex), np.asarray(stats.exz)
    psi = np.asarray(stats.exx) - ex**2 - np.sum(exz**2, axis=2)
    assert psi.min() > 0  # small loadings: a proper optimum exists
    optimum = {
        "log_w": jnp.log(stats.weights), "means": stats.ex, "loads": stats.exz, "psi": jnp.asarray(psi, jnp.float32),
    }  # fmt: skip
    grads = jax.grad(g.expected_nll)(g.to_natural(optimum), stats, 1e-5)
    for key, value in grads.items():
        assert float(jnp.max(jnp.abs(value))) < 1e-3, key


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    X, _ = make_blobs(300, n_features=8, centers=4, cluster_std=1.0, random_state=1)
    return (X / 10.0).astype(np.float32)


def _fit(X, seed, **kw):
    kw = {
        "n_iter": 6,
        "trainer": "gradient",
        "learning_rate": 3e-3,
        "batch_steps": 20,
        "min_variance": 0.01,
        **kw,
    }
    return MixtureOfFactorAnalyzers(6, 2, random_state=seed, **kw).fit(X)


def test_gradient_trainer_is_deterministic_and_improves_likelihood(blobs):
    a, b, c = _fit(blobs, 0), _fit(blobs, 0), _fit(blobs, 1)
    for key in a.params_:
        np.testing.assert_array_equal(np.asarray(a.params_[key]), np.asarray(b.params_[key]))
    assert not np.allclose(np.asarray(a.params_["means"]), np.asarray(c.params_["means"]))
    history = a.loglik_history_
    assert history[-1] > history[0] and np.all(np.isfinite(history))
    assert np.all(a.weights_ >= 1e-4 / (1 + 6e-4) - 1e-7) and np.isclose(a.weights_.sum(), 1.0, atol=1e-5)
    assert np.all(np.asarray(a.params_["psi"]) >= 1e-5)


def test_small_learning_rate_keeps_responsibilities_softer_than_exact_em(blobs):
    """The regime the note relies on: after the same number of E-steps, EM is harder than the slow trainer."""
    em = MixtureOfFactorAnalyzers(6, 2, n_iter=6, min_variance=1e-3, random_state=0).fit(blobs)
    slow = _fit(blobs, 0, learning_rate=1e-4)
    assert hard_fraction(slow.predict_proba(blobs)) < hard_fraction(em.predict_proba(blobs))


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"trainer": "sgd"}, "trainer"), ({"batch_steps": 0}, "batch_steps"), ({"learning_rate": 0.0}, "learning_rate"),
     ({"min_prob": 0.5}, "min_prob"), ({"obs_min_var": 0.0}, "obs_min_var")],
)  # fmt: skip
def test_bad_trainer_settings_are_clear_errors(blobs, kw, match):
    with pytest.raises(ValueError, match=match):
        _fit(blobs, 0, **kw)


def test_hard_fraction_counts_near_hard_rows_and_checks_input():
    resp = np.array([[0.995, 0.005], [0.5, 0.5], [0.0, 1.0], [0.98, 0.02]])
    assert hard_fraction(resp) == 0.5
    assert hard_fraction(resp, threshold=0.9) == 0.75
    assert hard_fraction(np.full((3, 4), 0.25)) == 0.0
    for bad, match in [(np.ones(3), "shape"), (np.array([[np.nan, 1.0]]), "finite"), (-resp, "non-negative")]:
        with pytest.raises(ValueError, match=match):
            hard_fraction(bad)
    with pytest.raises(ValueError, match="threshold"):
        hard_fraction(resp, threshold=1.0)


# ---- the shared core, HMoG's half -----------------------------------------------------------------------


def test_whiten_latents_gives_a_standard_marginal_and_floors_component_variances():
    from reprolab.models.mixtures import _gradient as core

    raw = _stats(4)
    ez = raw.ez * 3.0 + 1.0
    # consistent moments: every component's covariance is 0.3 I
    ezz = jnp.einsum("kl,km->klm", ez, ez) + 0.3 * jnp.eye(L)
    stats = raw._replace(weights=raw.weights / raw.weights.sum(), ez=ez, ezz=ezz)
    b = core.whiten_latents(stats, lat_min_var=0.5)
    w = np.asarray(b.weights)
    ez, ezz = np.asarray(b.ez), np.asarray(b.ezz)
    mean = w @ ez
    second = np.einsum("k,klm->lm", w, ezz)
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    comp_var = np.diagonal(ezz, axis1=1, axis2=2) - ez**2
    assert comp_var.min() >= 0.5 - 1e-5  # the floor, applied after whitening
    # without a floor the marginal covariance is the identity
    plain = core.whiten_latents(stats, lat_min_var=0.0)
    m2 = np.einsum("k,klm->lm", w, np.asarray(plain.ezz)) - np.outer(mean, mean)
    np.testing.assert_allclose(m2, np.eye(L), atol=1e-3)
    assert second.shape == (L, L)


def test_hmog_natural_coordinates_round_trip():
    from reprolab.models.mixtures import hmog

    rng = np.random.default_rng(5)
    a = rng.normal(size=(K, L, L)) * 0.3 + np.eye(L)
    p = {
        "log_w": jnp.log(jnp.asarray([0.2, 0.3, 0.5], jnp.float32)),
        "m": jnp.asarray(rng.normal(size=(K, L)), jnp.float32),
        "chol": jnp.asarray(np.linalg.cholesky(a @ np.swapaxes(a, 1, 2)), jnp.float32),
        "W": jnp.asarray(rng.normal(size=(D, L)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=D), jnp.float32),
        "psi": jnp.asarray(rng.uniform(0.2, 1.0, size=D), jnp.float32),
        "dW": jnp.asarray(rng.normal(size=(K, D, L)) * 0.1, jnp.float32),
        "c": jnp.asarray(rng.normal(size=(K, D)) * 0.1, jnp.float32),
    }
    back = hmog._from_natural(hmog._to_natural(p), 1e-5)
    for key in p:
        np.testing.assert_allclose(np.asarray(back[key]), np.asarray(p[key]), rtol=1e-3, atol=1e-4)


def test_hmog_gradient_e_step_matches_the_exact_posterior_moments(blobs):
    """The y-coordinate statistics of the gradient trainer's E-step equal exact EM's sufficient statistics."""
    from reprolab.models.mixtures import HierarchicalMixture, hmog

    model = HierarchicalMixture(4, 2, trainer="em", n_iter=5, random_state=0).fit(blobs)
    p = model.params_
    cfg = HierarchicalMixture().settings()
    stats, _ = hmog._gradient_e_step(hmog._to_natural(p), jnp.asarray(blobs), cfg)
    t = hmog._shared_terms(p)
    st = hmog._e_stats(t, p, jnp.asarray(blobs), jnp.ones(blobs.shape[0]))
    ry = np.asarray(jnp.einsum("kml,km->kl", t.c_inv, st["ru"]))
    nk = np.asarray(st["nk"])
    np.testing.assert_allclose(np.asarray(stats.weights), nk / nk.sum(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.ez), ry / nk[:, None], atol=1e-3)


def test_hmog_gradient_trainer_is_deterministic_and_bounded(blobs):
    from reprolab.models.mixtures import HierarchicalMixture

    kw = {"trainer": "gradient", "n_iter": 5, "steps_per_epoch": 20, "learning_rate": 1e-2, "ent_reg": 1e-3}
    a = HierarchicalMixture(6, 2, random_state=0, **kw).fit(blobs)
    b = HierarchicalMixture(6, 2, random_state=0, **kw).fit(blobs)
    for key in a.params_:
        np.testing.assert_array_equal(np.asarray(a.params_[key]), np.asarray(b.params_[key]))
    assert a.loglik_history_[-1] > a.loglik_history_[0]
    assert np.all(np.asarray(a.params_["psi"]) >= 1e-5) and "dW" not in a.params_


def test_pooled_hmog_loss_equals_the_per_component_loss(blobs):
    """Plain HMoG's pooled observable term equals the full model's per-component one at zero offsets."""
    from reprolab.models.mixtures import HierarchicalMixture, hmog

    model = HierarchicalMixture(4, 2, trainer="em", n_iter=3, random_state=0).fit(blobs)
    p = dict(model.params_)
    cfg = HierarchicalMixture(ent_reg=1e-2, l2_reg=1e-3).settings()
    theta = hmog._to_natural(p)
    stats, _ = hmog._gradient_e_step(theta, jnp.asarray(blobs), cfg)
    full = dict(theta, eta_c=jnp.zeros((4, blobs.shape[1])), dB=jnp.zeros((4, blobs.shape[1], 2)))
    np.testing.assert_allclose(
        float(hmog._gradient_loss(theta, stats, cfg)), float(hmog._gradient_loss(full, stats, cfg)), rtol=1e-5
    )
