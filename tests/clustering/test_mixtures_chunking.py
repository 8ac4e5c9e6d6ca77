"""Row-chunked M-step, E-step and gradient-EM loss compute what the unchunked (one-chunk) path computes.

Chunking is forced by shrinking the chunk budget so that 300 rows become five 64-row chunks (the last one
padded): padding, masking and the chunk sums are all exercised. Chunk sizes are trace-time constants, so the
jit caches are cleared around each forced run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reprolab.models.mixtures import GaussianMixture, HierarchicalMixture, _chunk
from reprolab.models.mixtures import hmog as hmog_module
from reprolab.models.mixtures._chunk import chunked_responsibilities
from reprolab.models.mixtures._factor import factor_log_prob

# float32 sums in another order: the chunked totals agree with the one-pass totals to rounding, not bit-exactly
RTOL, ATOL = 2e-4, 2e-5


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 6))
    return (centres[rng.integers(0, 4, 300)] + rng.normal(0, 1, (300, 6))).astype(np.float32)


def _chunked(monkeypatch: pytest.MonkeyPatch, fn):
    """``fn()`` with chunks of 64 rows; the budget is per (rows x K x L) intermediate, floored at 64 rows."""
    jax.clear_caches()
    with monkeypatch.context() as m:
        m.setattr(_chunk, "_CHUNK_FLOATS", 1)
        assert _chunk.chunk_rows(300, 24) == 64
        out = fn()
    jax.clear_caches()
    return out


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gmm_em_chunked_equals_unchunked(data, monkeypatch, covariance_type) -> None:
    fit = lambda: GaussianMixture(4, covariance_type=covariance_type, n_iter=3, random_state=0).fit(data)  # noqa: E731
    whole, chunked = fit(), _chunked(monkeypatch, fit)
    for key in ("log_w", "means", "cov"):
        np.testing.assert_allclose(
            chunked.params_[key], whole.params_[key], rtol=RTOL, atol=ATOL, err_msg=key
        )
    np.testing.assert_allclose(chunked.loglik_history_, whole.loglik_history_, rtol=RTOL)
    np.testing.assert_allclose(
        _chunked(monkeypatch, lambda: whole.score_samples(data)),
        whole.score_samples(data),
        rtol=RTOL,
        atol=ATOL,
    )


def test_hmog_gradient_em_e_step_loss_and_gradient_chunked_equal_unchunked(data, monkeypatch) -> None:
    # the full-interaction model (plain HMoG runs the same compiled epoch, its offsets frozen at zero)
    model = HierarchicalMixture(4, 2, interaction="full", trainer="gradient", n_iter=0, random_state=0).fit(
        data
    )
    rng = np.random.default_rng(1)
    params = dict(model.params_)
    params["dW"] = jnp.asarray(0.1 * rng.standard_normal(params["dW"].shape), jnp.float32)  # non-zero offsets
    params["c"] = jnp.asarray(0.1 * rng.standard_normal(params["c"].shape), jnp.float32)
    free, X = hmog_module._to_free(params), jnp.asarray(data)
    resp = jnp.asarray(rng.dirichlet(np.ones(4), len(data)), jnp.float32)

    comps = hmog_module._components(params)

    @jax.jit
    def e_step(X):  # the epoch's E-step, with the chunk size the epoch uses
        log_prob = lambda x: factor_log_prob(x, *comps)  # noqa: E731
        return chunked_responsibilities(log_prob, params["log_w"], X, hmog_module._rows(params, X))

    def run():
        loss, grads = jax.jit(jax.value_and_grad(hmog_module._loss))(free, X, resp, 1e-3, 1e-4)
        return loss, grads, *e_step(X)

    whole, chunked = run(), _chunked(monkeypatch, run)
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-5)  # the loss
    for key in whole[1]:
        np.testing.assert_allclose(
            chunked[1][key], whole[1][key], rtol=RTOL, atol=ATOL, err_msg=f"grad {key}"
        )
    np.testing.assert_allclose(chunked[2], whole[2], rtol=RTOL, atol=ATOL)  # responsibilities
    np.testing.assert_allclose(chunked[3], whole[3], rtol=1e-5)  # mean log-likelihood
