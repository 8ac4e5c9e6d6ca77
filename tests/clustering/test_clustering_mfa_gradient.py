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

K, D, L = 3, 5, 2


def _stats(seed: int = 0) -> g.MFAStatistics:
    rng = np.random.default_rng(seed)
    w = np.array([0.7, 0.29995, 0.00005])
    ex = rng.normal(size=(K, D))
    exx = ex**2 + rng.uniform(0.0, 0.3, size=(K, D))
    exx[0, 0] = ex[0, 0] ** 2 + 1e-9  # a variance below the floor
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return g.MFAStatistics(
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
