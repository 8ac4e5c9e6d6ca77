"""Row-chunked M-step, E-step and gradient-EM loss compute what the unchunked (one-chunk) path computes.

Chunking is forced by shrinking the chunk budget so that 240 rows become four 64-row chunks (the last one
padded with 16 rows): padding, masking and the chunk sums are all exercised. Chunk sizes are trace-time
constants, so the caches of the jitted functions involved are cleared around each forced run (only theirs: a
global ``jax.clear_caches()`` would make every later test in the process recompile everything), and a spy on
the padding checks that the forced run really went through the chunked path. The shapes (240 x 6, GMM K=4 with
15 iterations, HMoG K=6, L=2) are those of test_clustering_models, so in one process the unchunked runs reuse
its compilations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reprolab.models.mixtures import GaussianMixture, HierarchicalMixture, _chunk, gmm
from reprolab.models.mixtures import hmog as hmog_module

# float32 sums in another order: the chunked totals agree with the one-pass totals to rounding, not bit-exactly
RTOL, ATOL = 2e-4, 2e-5


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 6))
    return (centres[rng.integers(0, 4, 240)] + rng.normal(0, 1, (240, 6))).astype(np.float32)


def _chunked(monkeypatch: pytest.MonkeyPatch, fn, jitted):
    """``fn()`` with chunks of 64 rows; the budget is per (rows x K x L) intermediate, floored at 64 rows.

    ``jitted``: the jitted functions ``fn`` runs whose traces depend on the chunk size (re-traced here)."""
    padded_rows = []
    padded = _chunk._padded

    def spy(X, rows):
        padded_rows.append((X.shape[0], rows))
        return padded(X, rows)

    for f in jitted:
        f.clear_cache()
    with monkeypatch.context() as m:
        m.setattr(_chunk, "_CHUNK_FLOATS", 1)
        m.setattr(_chunk, "_padded", spy)
        assert _chunk.chunk_rows(240, 24) == 64
        out = fn()
    for f in jitted:
        f.clear_cache()
    assert padded_rows and all(p == (240, 64) for p in padded_rows), padded_rows  # 240 rows -> 4 chunks
    return out


def _fit_gmm(data: np.ndarray, covariance_type: str) -> GaussianMixture:
    return GaussianMixture(4, covariance_type=covariance_type, n_iter=15, random_state=0).fit(data)


@pytest.fixture(scope="module")
def gmm_whole(data) -> dict:
    """The unchunked fits and log-likelihoods, both covariance types computed before any forced run (clearing
    a jitted function's cache drops its compilations for every shape, the other covariance type's too)."""
    out = {}
    for covariance_type in ("full", "diag"):
        model = _fit_gmm(data, covariance_type)
        out[covariance_type] = (model, model.score_samples(data))
    return out


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gmm_em_chunked_equals_unchunked(data, gmm_whole, monkeypatch, covariance_type) -> None:
    whole, expected = gmm_whole[covariance_type]
    chunked = _chunked(monkeypatch, lambda: _fit_gmm(data, covariance_type), (gmm._em,))
    for key in ("log_w", "means", "cov"):
        np.testing.assert_allclose(
            chunked.params_[key], whole.params_[key], rtol=RTOL, atol=ATOL, err_msg=key
        )
    np.testing.assert_allclose(chunked.loglik_history_, whole.loglik_history_, rtol=RTOL)
    np.testing.assert_allclose(
        _chunked(monkeypatch, lambda: whole.score_samples(data), (gmm._log_joint,)),
        expected,
        rtol=RTOL,
        atol=ATOL,
    )


def test_hmog_reference_trainer_e_step_chunked_equals_unchunked(data, monkeypatch) -> None:
    # the trainer's steps read only per-component statistics; its one data pass per epoch is factor_sums
    comps = {}
    for interaction in ("hierarchical", "full"):
        model = HierarchicalMixture(
            6, 2, interaction=interaction, trainer="gradient", n_iter=0, random_state=0
        )
        params = dict(model.fit(data).params_)
        means, loads, psi = hmog_module._components(params)
        comps[interaction] = {"log_w": params["log_w"], "means": means, "loads": loads, "psi": psi}
    X = jnp.asarray(data)
    # both interactions give the kernel the same shapes: one compilation per path, unchunked and chunked
    sums = jax.jit(hmog_module.factor_sums)
    whole = {interaction: sums(c, X) for interaction, c in comps.items()}
    chunked = _chunked(monkeypatch, lambda: {i: sums(c, X) for i, c in comps.items()}, (sums,))
    for interaction in comps:
        for key in whole[interaction]:
            np.testing.assert_allclose(
                chunked[interaction][key], whole[interaction][key], rtol=RTOL, atol=ATOL,
                err_msg=f"{interaction}: {key}",
            )  # fmt: skip
