"""Row-chunked M-step, E-step and gradient-EM loss compute what the unchunked (one-chunk) path computes.

Chunking is forced by shrinking the chunk budget so that 300 rows become five 64-row chunks (the last one
padded): padding, masking and the chunk sums are all exercised. Chunk sizes are trace-time constants, so the
jit caches are cleared around each forced run.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from reprolab.models.mixtures import GaussianMixture, _chunk

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
