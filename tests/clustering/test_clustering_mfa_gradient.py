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

# The functions under test, jitted once at module level: run eagerly, each of their many small ops would
# compile a kernel of its own (the library jits them the same way).
_bound = jax.jit(g.bound_statistics)
_to_natural = jax.jit(g.to_natural)
_from_natural = jax.jit(g.from_natural)
_grad_nll = jax.jit(jax.grad(g.expected_nll))


def _stats(seed: int = 0) -> ComponentStatistics:
    rng = np.random.default_rng(seed)
    w = np.array([0.7, 0.29995, 0.00005])
    ex = rng.normal(size=(K, D))
    exx = ex**2 + rng.uniform(0.0, 0.3, size=(K, D))
    exx[0, 0] = ex[0, 0] ** 2 + 1e-9  # a variance below the floor
    f32 = lambda a: jnp.asarray(np.asarray(a, np.float32))  # noqa: E731  (cast on the host: no kernel)
    return ComponentStatistics(
        f32(w), f32(ex), f32(exx), f32(rng.normal(size=(K, D, L)) * 0.1), f32(rng.normal(size=(K, L))),
        f32(np.stack([np.eye(L) * 2.0] * K)),
    )  # fmt: skip


def test_bound_statistics_floors_clips_renormalises_and_resets_latents():
    raw = _stats()
    b = _bound(raw, 1e-3, 1e-2)
    w = np.asarray(b.weights)
    assert np.isclose(w.sum(), 1.0, atol=1e-6) and w.min() >= 1e-2 / (1 + 1e-2) - 1e-7
    assert np.all(np.asarray(b.exx - b.ex**2) >= 1e-3 - 1e-6)
    np.testing.assert_allclose(np.asarray(b.exx)[1:], np.asarray(raw.exx)[1:], rtol=1e-6)  # above the floor
    assert np.all(np.asarray(b.ez) == 0.0)
    np.testing.assert_array_equal(np.asarray(b.ezz), np.stack([np.eye(L)] * K))
    np.testing.assert_array_equal(np.asarray(b.ex), np.asarray(raw.ex))
    np.testing.assert_array_equal(np.asarray(b.exz), np.asarray(raw.exz))


def test_natural_gradient_is_model_minus_bounded_statistics():
    stats = _bound(_stats(1), 1e-5, 1e-4)
    rng = np.random.default_rng(2)
    params = {
        "log_w": jnp.asarray(np.log(np.asarray([0.2, 0.3, 0.5], np.float32))),
        "means": jnp.asarray(rng.normal(size=(K, D)), jnp.float32),
        "loads": jnp.asarray(rng.normal(size=(K, D, L)) * 0.1, jnp.float32),
        "psi": jnp.asarray(rng.uniform(0.2, 1.0, size=(K, D)), jnp.float32),
    }
    theta = _to_natural(params)
    back = _from_natural(theta, 1e-5)
    for key in params:
        np.testing.assert_allclose(np.asarray(back[key]), np.asarray(params[key]), rtol=1e-5, atol=1e-6)
    grads = _grad_nll(theta, stats, 1e-5)
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
    stats = _bound(raw._replace(exz=jnp.asarray(np.asarray(raw.exz) * np.float32(0.05))), 1e-2, 1e-4)
    ex, exz = np.asarray(stats.ex), np.asarray(stats.exz)
    psi = np.asarray(stats.exx) - ex**2 - np.sum(exz**2, axis=2)
    assert psi.min() > 0  # small loadings: a proper optimum exists
    optimum = {
        "log_w": jnp.asarray(np.log(np.asarray(stats.weights))), "means": stats.ex, "loads": stats.exz,
        "psi": jnp.asarray(psi.astype(np.float32)),
    }  # fmt: skip
    grads = _grad_nll(_to_natural(optimum), stats, 1e-5)
    for key, value in grads.items():
        assert float(np.max(np.abs(np.asarray(value)))) < 1e-3, key


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    # the shape of test_clustering_models' blobs (240 x 6): in one process the fits below reuse the compiled
    # EM steps, E-steps and trainer steps of the same-shaped models there (and vice versa)
    X, _ = make_blobs(240, n_features=6, centers=4, cluster_std=1.0, random_state=1)
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
    ez = np.asarray(raw.ez) * np.float32(3.0) + np.float32(1.0)
    # consistent moments: every component's covariance is 0.3 I
    ezz = (np.einsum("kl,km->klm", ez, ez) + 0.3 * np.eye(L)).astype(np.float32)
    weights = np.asarray(raw.weights)
    stats = raw._replace(
        weights=jnp.asarray(weights / weights.sum()), ez=jnp.asarray(ez), ezz=jnp.asarray(ezz)
    )
    whiten = jax.jit(core.whiten_latents)  # one compilation for both floors (the floor is traced)
    b = whiten(stats, 0.5)
    w = np.asarray(b.weights)
    ez, ezz = np.asarray(b.ez), np.asarray(b.ezz)
    mean = w @ ez
    second = np.einsum("k,klm->lm", w, ezz)
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    comp_var = np.diagonal(ezz, axis1=1, axis2=2) - ez**2
    assert comp_var.min() >= 0.5 - 1e-5  # the floor, applied after whitening
    # without a floor the marginal covariance is the identity
    plain = whiten(stats, 0.0)
    m2 = np.einsum("k,klm->lm", w, np.asarray(plain.ezz)) - np.outer(mean, mean)
    np.testing.assert_allclose(m2, np.eye(L), atol=1e-3)
    assert second.shape == (L, L)


def test_hmog_natural_coordinates_round_trip():
    from reprolab.models.mixtures import hmog

    rng = np.random.default_rng(5)
    a = rng.normal(size=(K, L, L)) * 0.3 + np.eye(L)
    p = {
        "log_w": jnp.asarray(np.log(np.asarray([0.2, 0.3, 0.5], np.float32))),
        "m": jnp.asarray(rng.normal(size=(K, L)), jnp.float32),
        "chol": jnp.asarray(np.linalg.cholesky(a @ np.swapaxes(a, 1, 2)), jnp.float32),
        "W": jnp.asarray(rng.normal(size=(D, L)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=D), jnp.float32),
        "psi": jnp.asarray(rng.uniform(0.2, 1.0, size=D), jnp.float32),
        "dW": jnp.asarray(rng.normal(size=(K, D, L)) * 0.1, jnp.float32),
        "c": jnp.asarray(rng.normal(size=(K, D)) * 0.1, jnp.float32),
    }
    back = jax.jit(lambda q: hmog._from_natural(hmog._to_natural(q), 1e-5))(p)  # one compilation
    for key in p:
        np.testing.assert_allclose(np.asarray(back[key]), np.asarray(p[key]), rtol=1e-3, atol=1e-4)


@pytest.fixture(scope="module")
def hmog_em(blobs):
    """An exact-EM HMoG with the gradient trainer's test shapes (6 components, latent 2): the gradient E-step
    below compiles once for the three tests."""
    from reprolab.models.mixtures import HierarchicalMixture

    return HierarchicalMixture(6, 2, trainer="em", n_iter=5, random_state=0).fit(blobs)


def _exact_posterior_sums(p: dict, X: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact EM's sum_n r_nk E[y | x_n, k] (K, L) and sum_n r_nk (K,), from the shared-W kernel."""
    from reprolab.models.mixtures import hmog

    t = hmog._shared_terms(p)
    st = hmog._e_stats(t, p, X, jnp.ones(X.shape[0], X.dtype))
    return jnp.einsum("kml,km->kl", t.c_inv, st["ru"]), st["nk"]


def test_hmog_gradient_e_step_matches_the_exact_posterior_moments(blobs, hmog_em):
    """The y-coordinate statistics of the gradient trainer's E-step equal exact EM's sufficient statistics."""
    from reprolab.models.mixtures import HierarchicalMixture, hmog

    p = hmog_em.params_
    cfg = HierarchicalMixture().settings()
    stats, _ = hmog._gradient_e_step(jax.jit(hmog._to_natural)(p), jnp.asarray(blobs), cfg)
    ry, nk = (np.asarray(a) for a in jax.jit(_exact_posterior_sums)(p, jnp.asarray(blobs)))
    np.testing.assert_allclose(np.asarray(stats.weights), nk / nk.sum(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.ez), ry / nk[:, None], atol=1e-3)


def test_hmog_gradient_trainer_is_deterministic_and_bounded(blobs):
    from reprolab.models.mixtures import HierarchicalMixture

    # steps_per_epoch is static (compiled into the trainer step): 5, as in test_clustering_models
    kw = {"trainer": "gradient", "n_iter": 5, "steps_per_epoch": 5, "learning_rate": 1e-2, "ent_reg": 1e-3}
    a = HierarchicalMixture(6, 2, random_state=0, **kw).fit(blobs)
    b = HierarchicalMixture(6, 2, random_state=0, **kw).fit(blobs)
    for key in a.params_:
        np.testing.assert_array_equal(np.asarray(a.params_[key]), np.asarray(b.params_[key]))
    assert a.loglik_history_[-1] > a.loglik_history_[0]
    assert np.all(np.asarray(a.params_["psi"]) >= 1e-5) and "dW" not in a.params_


def test_pooled_hmog_loss_equals_the_per_component_loss(blobs, hmog_em):
    """Plain HMoG's pooled observable term equals the full model's per-component one at zero offsets."""
    from reprolab.models.mixtures import HierarchicalMixture, hmog

    p = dict(hmog_em.params_)
    k, latent = p["m"].shape
    cfg = HierarchicalMixture(ent_reg=1e-2, l2_reg=1e-3).settings()
    theta = jax.jit(hmog._to_natural)(p)
    stats, _ = hmog._gradient_e_step(theta, jnp.asarray(blobs), cfg)
    d = blobs.shape[1]
    full = dict(theta, eta_c=jnp.zeros((k, d)), dB=jnp.zeros((k, d, latent)))
    loss = jax.jit(hmog._gradient_loss)
    np.testing.assert_allclose(float(loss(theta, stats, cfg)), float(loss(full, stats, cfg)), rtol=1e-5)
