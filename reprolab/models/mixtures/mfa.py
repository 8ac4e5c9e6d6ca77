"""Mixture of factor analysers (Ghahramani & Hinton 1996) trained by exact EM.

Component k: x = mu_k + Lambda_k z + eps, z ~ N(0, I_L), eps ~ N(0, diag psi_k). The M-step regresses x
on the augmented factor [z; 1] per component, so means and loadings are updated jointly. Initialisation
follows the goal-apps recipe the notes used: k-means means, within-cluster variances, loadings 0.01 N(0, 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import NDArray

from reprolab.models.mixtures._base import FactorMixtureModel, run_em
from reprolab.models.mixtures._chunk import chunk_rows, chunked_map, chunked_sum
from reprolab.models.mixtures._factor import (
    factor_posterior,
    log_responsibilities,
    regression_stats,
    solve_regression,
)
from reprolab.models.mixtures._init import kmeans_partition, partition_moments
from reprolab.models.mixtures._validation import check_float, check_int


def _rows(params: dict, X: jax.Array) -> int:
    """Chunk size: the E-step's largest intermediates are (rows, K, L)."""
    return chunk_rows(X.shape[0], params["loads"].shape[0] * params["loads"].shape[2])


def _joint_rows(params: dict, X: jax.Array) -> jax.Array:
    post = factor_posterior(X, params["means"], params["loads"], params["psi"])
    return params["log_w"][None, :] + post.log_prob


@jax.jit
def _log_joint(params: dict, X: jax.Array) -> jax.Array:
    return chunked_map(lambda x: _joint_rows(params, x), X, _rows(params, X))


def _e_stats(params: dict, X: jax.Array, mask: jax.Array) -> dict:
    """Sufficient statistics of one row chunk (rows weighted by ``mask``)."""
    post = factor_posterior(X, params["means"], params["loads"], params["psi"])
    log_r, log_px = log_responsibilities(params["log_w"], post.log_prob)
    resp = jnp.exp(log_r) * mask[:, None]
    g, h, sxx = regression_stats(X, resp, post.mean, post.cov)
    return {"nk": resp.sum(axis=0), "g": g, "h": h, "sxx": sxx, "loglik": jnp.sum(log_px * mask)}


def _em_step(params: dict, X: jax.Array, min_variance: float) -> tuple[dict, jax.Array]:
    """One exact EM iteration; the E-step runs in row chunks (memory O(rows K L), not O(N K L))."""
    stats = chunked_sum(lambda x, mask: _e_stats(params, x, mask), X, _rows(params, X))
    nk = stats["nk"]
    lam, psi = solve_regression(stats["g"], stats["h"], stats["sxx"], nk, min_variance)
    latent = params["loads"].shape[2]
    weights = (nk + 1e-6) / (nk.sum() + 1e-6 * nk.shape[0])
    new = {"log_w": jnp.log(weights), "means": lam[:, :, latent], "loads": lam[:, :, :latent], "psi": psi}
    return new, stats["loglik"] / X.shape[0]


_em_step_jit = jax.jit(_em_step)


def _em(params: dict, X: jax.Array, min_variance: float, n_iter: int) -> tuple[dict, jax.Array]:
    return run_em(_em_step_jit, params, X, min_variance, n_iter)


def _reconstruct_rows(params: dict, X: jax.Array) -> jax.Array:
    post = factor_posterior(X, params["means"], params["loads"], params["psi"])
    log_r, _ = log_responsibilities(params["log_w"], post.log_prob)
    resp = jnp.exp(log_r)
    # sum_k r_nk (mu_k + Lambda_k E[z | x, k]) contracted over (k, l) at once: no N x K x D array
    return resp @ params["means"] + jnp.einsum("knl,kdl->nd", resp.T[:, :, None] * post.mean, params["loads"])


@jax.jit
def _reconstruct(params: dict, X: jax.Array) -> jax.Array:
    return chunked_map(lambda x: _reconstruct_rows(params, x), X, _rows(params, X))


class MixtureOfFactorAnalyzers(FactorMixtureModel):
    """MFA with ``n_components`` components of ``latent_dim`` factors each and per-component diagonal noise.

    ``min_variance`` floors the noise variances (pixels that are constant within a component would otherwise
    collapse to zero variance and infinite likelihood).
    """

    _log_joint_fn = staticmethod(_log_joint)
    _reconstruct_fn = staticmethod(_reconstruct)

    def __init__(
        self,
        n_components: int = 10,
        latent_dim: int = 5,
        *,
        n_iter: int = 100,
        min_variance: float = 1e-3,
        random_state: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.latent_dim = latent_dim
        self.n_iter = n_iter
        self.min_variance = min_variance
        self.random_state = random_state

    def _validate_params(self, X: NDArray) -> None:
        check_int("n_components", self.n_components, minimum=1)
        self._check_latent_dim(X)
        check_int("n_iter", self.n_iter, minimum=0)
        check_float("min_variance", self.min_variance, minimum=0.0, strict=True)

    def _fit(self, X: jax.Array, seed: int) -> dict:
        data = np.asarray(X)
        k, latent = self.n_components, self.latent_dim
        _, labels = kmeans_partition(data, k, seed)
        weights, means, var = partition_moments(data, labels, k, self.min_variance)
        loads = 0.01 * np.random.default_rng(seed).standard_normal((k, data.shape[1], latent))
        params = {
            "log_w": jnp.log(jnp.asarray(weights)),
            "means": jnp.asarray(means),
            "loads": jnp.asarray(loads, dtype=jnp.float32),
            "psi": jnp.asarray(var),
        }
        params, history = _em(params, X, self.min_variance, self.n_iter)
        self.loglik_history_ = np.asarray(history)
        return params

    def component_gaussians(self) -> tuple[NDArray, NDArray]:
        """Means (K, D) and full covariances (K, D, D) of the components (for KL / Bhattacharyya mergers)."""
        self._check_fitted()
        p = self.params_
        cov = jnp.einsum("kdl,kel->kde", p["loads"], p["loads"]) + jax.vmap(jnp.diag)(p["psi"])
        return np.asarray(p["means"]), np.asarray(cov)
