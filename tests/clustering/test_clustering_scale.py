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


@jax.jit
def _shared_w_kernel(p: dict, X: jax.Array) -> tuple[jax.Array, jax.Array]:
    """log p(x | k) and E[y | x, k] from HMoG's shared-W kernel."""
    terms = hmog._shared_terms(p)
    log_prob, u = hmog._hier_posterior(terms, p, X)
    return log_prob, hmog._latent_mean(terms, u)


@jax.jit
def _generic_kernel(p: dict, X: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The same two from the generic factor kernel; E[y | x, k] = m_k + chol_k E[z | x, k]."""
    means, loads, psi = hmog._components(p)
    post = factor_posterior(X, means, loads, psi)
    expected = p["m"][:, None, :] + jnp.einsum("klm,knm->knl", p["chol"], post.mean)
    return factor_log_prob(X, means, loads, psi), expected


def test_shared_w_hmog_kernel_equals_generic_factor_kernel():
    # jitted (as the library runs them): two compilations instead of one per eager op
    rng = np.random.default_rng(0)
    p = _hmog_params(rng)
    X = jnp.asarray(rng.normal(size=(9, 7)), jnp.float32)
    log_prob, mean = _shared_w_kernel(p, X)
    generic_log_prob, expected = _generic_kernel(p, X)
    np.testing.assert_allclose(np.asarray(log_prob), np.asarray(generic_log_prob), atol=2e-4)
    np.testing.assert_allclose(np.asarray(mean), np.asarray(expected), atol=2e-4)


_CHUNK_JITS = (mfa._em_step_jit, hmog._em_step_jit, mfa._log_joint, hmog._log_joint)


@pytest.fixture
def tiny_chunks(monkeypatch):
    """``force()`` forces several (ragged) chunks on a small problem and re-traces the jitted steps for it
    (chunk sizes are trace-time constants); the traces are dropped again at teardown. Returns the
    (rows, chunk) of every padded chunking traced while forced, to check the chunked path really ran."""
    padded_rows = []
    padded = _chunk._padded

    def spy(X, rows):
        padded_rows.append((X.shape[0], rows))
        return padded(X, rows)

    def force():
        monkeypatch.setattr(_chunk, "_CHUNK_FLOATS", 64 * 12)
        monkeypatch.setattr(_chunk, "_padded", spy)
        for fn in _CHUNK_JITS:
            fn.clear_cache()
        return padded_rows

    yield force
    monkeypatch.undo()
    for fn in _CHUNK_JITS:
        fn.clear_cache()


def _mfa_params(rng: np.random.Generator, k: int = 4, d: int = 7, latent: int = 3) -> dict:
    return {
        "log_w": jnp.log(jnp.asarray(rng.dirichlet(np.ones(k)), jnp.float32)),
        "means": jnp.asarray(rng.normal(size=(k, d)), jnp.float32),
        "loads": jnp.asarray(rng.normal(size=(k, d, latent)), jnp.float32),
        "psi": jnp.asarray(rng.uniform(0.3, 1.0, size=(k, d)), jnp.float32),
    }


def test_chunked_em_steps_equal_single_chunk(tiny_chunks):
    """The shapes of test_clustering_models' fits (240 x 6, K=6, L=2): in one process the single-chunk
    reference steps reuse their compilations. The reference runs first, under the default budget (one chunk);
    then the chunks are forced and the steps re-traced."""
    rng = np.random.default_rng(1)
    X = jnp.asarray(rng.normal(size=(240, 6)).astype(np.float32))  # 64-row chunks: 4 chunks, the last ragged
    cases = [(mfa, _mfa_params(rng, 6, 6, 2)), (hmog, _hmog_params(rng, 6, 6, 2))]
    refs = [(module._em_step_jit(params, X, 1e-3), module._log_joint(params, X)) for module, params in cases]
    padded_rows = tiny_chunks()
    assert _chunk.chunk_rows(240, 12) == 64
    for (module, params), ((ref, ll_ref), joint_ref) in zip(cases, refs, strict=True):
        del padded_rows[:]
        chunked, ll_chunked = module._em_step_jit(params, X, 1e-3)
        assert padded_rows == [(240, 64)], padded_rows  # a fresh trace through the chunked path
        for key in ref:
            np.testing.assert_allclose(np.asarray(chunked[key]), np.asarray(ref[key]), rtol=2e-4, atol=2e-4)
        assert float(ll_chunked) == pytest.approx(float(ll_ref), rel=1e-5)
        joint = module._log_joint(params, X)
        assert padded_rows[1:] == [(240, 64)], padded_rows
        assert joint.shape == (240, 6)
        # every row, the padded last chunk's included, equals the single-pass rows
        np.testing.assert_allclose(np.asarray(joint), np.asarray(joint_ref), rtol=1e-5, atol=1e-4)
