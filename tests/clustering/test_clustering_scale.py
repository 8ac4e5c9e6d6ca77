"""Row chunking and the shared-W HMoG kernel: the memory-bounded paths compute what the dense ones do."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reprolab.models.mixtures import _chunk, hmog, mfa
from reprolab.models.mixtures._factor import factor_log_prob, factor_posterior


def _hmog_params(rng: np.random.Generator, k: int = 4, d: int = 7, latent: int = 3) -> dict:
    a = rng.normal(size=(k, latent, latent))
    chol = np.linalg.cholesky(np.einsum("kij,klj->kil", a, a) + np.eye(latent))
    return {
        "log_w": jnp.log(jnp.asarray(rng.dirichlet(np.ones(k)), jnp.float32)),
        "m": jnp.asarray(rng.normal(size=(k, latent)), jnp.float32),
        "chol": jnp.asarray(chol, jnp.float32),
        "W": jnp.asarray(rng.normal(size=(d, latent)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=d), jnp.float32),
        "psi": jnp.asarray(rng.uniform(0.3, 1.0, size=d), jnp.float32),
    }


def test_shared_w_hmog_kernel_equals_generic_factor_kernel():
    rng = np.random.default_rng(0)
    p = _hmog_params(rng)
    X = jnp.asarray(rng.normal(size=(9, 7)), jnp.float32)
    terms = hmog._shared_terms(p)
    log_prob, u = hmog._hier_posterior(terms, p, X)
    mean = hmog._latent_mean(terms, u)
    means, loads, psi = hmog._components(p)
    np.testing.assert_allclose(
        np.asarray(log_prob), np.asarray(factor_log_prob(X, means, loads, psi)), atol=2e-4
    )
    # E[y | x, k] = m_k + chol_k E[z | x, k] of the generic kernel
    post = factor_posterior(X, means, loads, psi)
    expected = p["m"][:, None, :] + jnp.einsum("klm,knm->knl", p["chol"], post.mean)
    np.testing.assert_allclose(np.asarray(mean), np.asarray(expected), atol=2e-4)


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Force several (ragged) chunks on a small problem; the jitted steps are re-traced for it."""
    monkeypatch.setattr(_chunk, "_CHUNK_FLOATS", 64 * 12)
    for fn in (mfa._em_step_jit, hmog._em_step_jit, mfa._log_joint, hmog._log_joint):
        fn.clear_cache()
    yield
    for fn in (mfa._em_step_jit, hmog._em_step_jit, mfa._log_joint, hmog._log_joint):
        fn.clear_cache()


def _mfa_params(rng: np.random.Generator, k: int = 4, d: int = 7, latent: int = 3) -> dict:
    return {
        "log_w": jnp.log(jnp.asarray(rng.dirichlet(np.ones(k)), jnp.float32)),
        "means": jnp.asarray(rng.normal(size=(k, d)), jnp.float32),
        "loads": jnp.asarray(rng.normal(size=(k, d, latent)), jnp.float32),
        "psi": jnp.asarray(rng.uniform(0.3, 1.0, size=(k, d)), jnp.float32),
    }


def test_chunked_em_steps_equal_single_chunk(tiny_chunks):
    rng = np.random.default_rng(1)
    X = jnp.asarray(rng.normal(size=(203, 7)), jnp.float32)  # 64-row chunks: 4 chunks, the last ragged
    assert _chunk.chunk_rows(203, 12) == 64
    for module, params in ((mfa, _mfa_params(rng)), (hmog, _hmog_params(rng))):
        chunked, ll_chunked = module._em_step_jit(params, X, 1e-3)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_chunk, "_CHUNK_FLOATS", 2**24)
            ref, ll_ref = jax.jit(module._em_step)(params, X, 1e-3)  # a fresh trace: one chunk
        for key in ref:
            np.testing.assert_allclose(np.asarray(chunked[key]), np.asarray(ref[key]), rtol=2e-4, atol=2e-4)
        assert float(ll_chunked) == pytest.approx(float(ll_ref), rel=1e-5)
        joint = module._log_joint(params, X)
        assert joint.shape == (203, 4)
        np.testing.assert_allclose(
            np.asarray(joint[150:]), np.asarray(module._joint_rows(params, X[150:])), rtol=1e-5, atol=1e-4
        )
