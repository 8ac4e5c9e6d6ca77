"""Gaussian mixture baseline (full or diagonal covariances) trained by exact EM in JAX.

The baseline exists so that the over-cluster-then-merge claims can be run on the simplest mixture, and so
that the mixture machinery can be cross-checked against scikit-learn's ``GaussianMixture``: with the same
k-means initialisation the two follow the same EM path (this one in float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from numpy.typing import NDArray

from reprolab.models.mixtures._base import MixtureModel
from reprolab.models.mixtures._chunk import chunk_rows, chunked_map, chunked_sum
from reprolab.models.mixtures._factor import log_responsibilities
from reprolab.models.mixtures._init import kmeans_partition
from reprolab.models.mixtures._validation import check_choice, check_float, check_int


def _log_prob(params: dict, X: jax.Array) -> jax.Array:
    d = X.shape[1]
    means = params["means"]
    if params["cov"].ndim == 2:  # diagonal
        var = params["cov"]
        quad = (X * X) @ (1.0 / var).T - 2.0 * X @ (means / var).T + jnp.sum(means * means / var, axis=1)
        logdet = jnp.sum(jnp.log(var), axis=1)
        return -0.5 * (d * math.log(2.0 * math.pi) + logdet[None, :] + quad)
    chol = jnp.linalg.cholesky(params["cov"])
    eye = jnp.broadcast_to(jnp.eye(d, dtype=X.dtype), chol.shape)
    prec_chol = jnp.swapaxes(solve_triangular(chol, eye, lower=True), 1, 2)  # Sigma^-1 = P P^T
    y = jnp.einsum("nd,kde->nke", X, prec_chol) - jnp.einsum("kd,kde->ke", means, prec_chol)[None]
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    return -0.5 * (d * math.log(2.0 * math.pi) + logdet[None, :] + jnp.sum(y * y, axis=-1))


def _chunked_responsibilities(
    log_prob_fn: Callable[[jax.Array], jax.Array], log_w: jax.Array, X: jax.Array, rows: int
) -> tuple[jax.Array, jax.Array]:
    """(responsibilities (N, K), mean log p(x)) of a mixture whose ``log_prob_fn`` maps rows to (rows, K)
    component log-densities; the (rows, K, ...) intermediates of ``log_prob_fn`` exist one chunk at a time."""
    k = log_w.shape[0]

    def rows_fn(x: jax.Array) -> jax.Array:
        log_r, log_px = log_responsibilities(log_w, log_prob_fn(x))
        return jnp.concatenate([log_r, log_px[:, None]], axis=1)

    out = chunked_map(rows_fn, X, rows)
    return jnp.exp(out[:, :k]), jnp.mean(out[:, k])


def _rows(n_rows: int, k: int, d: int, diagonal: bool) -> int:
    """Row chunk: a full-covariance pass holds (rows, K, D) centred or whitened rows; a diagonal one (rows, K)."""
    return chunk_rows(n_rows, k if diagonal else k * d)


@jax.jit
def _log_joint(params: dict, X: jax.Array) -> jax.Array:
    rows = _rows(X.shape[0], *params["means"].shape, params["cov"].ndim == 2)
    return chunked_map(lambda x: params["log_w"][None, :] + _log_prob(params, x), X, rows)


def _m_step(X: jax.Array, resp: jax.Array, reg_covar: float, diagonal: bool) -> dict:
    """Closed-form M-step in row chunks: memory O(rows K D), not O(N K D) (the centred rows of every
    component). Two passes (means, then centred second moments), as the unchunked formula computes them."""
    d = X.shape[1]
    xr = jnp.concatenate([X, resp], axis=1)  # each row with its responsibilities (see _chunk)
    rows = _rows(X.shape[0], resp.shape[1], d, diagonal)

    def moments(chunk: jax.Array, mask: jax.Array) -> dict:
        x, r = chunk[:, :d], chunk[:, d:] * mask[:, None]
        out = {"nk": r.sum(axis=0), "sx": r.T @ x}
        if diagonal:
            out["sxx"] = r.T @ (x * x)
        return out

    s = chunked_sum(moments, xr, rows)
    nk = s["nk"] + 10.0 * jnp.finfo(X.dtype).eps
    means = s["sx"] / nk[:, None]
    if diagonal:
        cov = s["sxx"] / nk[:, None] - means * means + reg_covar
        cov = jnp.maximum(cov, reg_covar)
    else:

        def scatter(chunk: jax.Array, mask: jax.Array) -> jax.Array:
            x, r = chunk[:, :d], chunk[:, d:] * mask[:, None]
            centred = x[:, None, :] - means[None, :, :]
            return jnp.einsum("nk,nkd,nke->kde", r, centred, centred)

        cov = chunked_sum(scatter, xr, rows) / nk[:, None, None]
        cov = cov + reg_covar * jnp.eye(d, dtype=X.dtype)
    return {"log_w": jnp.log(nk / nk.sum()), "means": means, "cov": cov}


@partial(jax.jit, static_argnames=("n_iter", "diagonal"))
def _em(resp0: jax.Array, X: jax.Array, reg_covar: float, n_iter: int, diagonal: bool):
    params = _m_step(X, resp0, reg_covar, diagonal)

    rows = _rows(X.shape[0], resp0.shape[1], X.shape[1], diagonal)

    def step(p, _):
        resp, loglik = _chunked_responsibilities(lambda x: _log_prob(p, x), p["log_w"], X, rows)
        return _m_step(X, resp, reg_covar, diagonal), loglik

    return jax.lax.scan(step, params, None, length=n_iter)


class GaussianMixture(MixtureModel):
    """Gaussian mixture fitted by ``n_iter`` EM iterations from a k-means partition.

    Parameters mirror scikit-learn's: ``covariance_type`` ('full' | 'diag'), ``reg_covar`` (added to the
    covariance diagonal), ``random_state`` (seeds k-means). A fixed iteration count (no tolerance) keeps the
    compiled loop static and the result a pure function of (data, hyper-parameters, seed).
    """

    _log_joint_fn = staticmethod(_log_joint)

    def __init__(
        self,
        n_components: int = 10,
        *,
        covariance_type: str = "full",
        n_iter: int = 100,
        reg_covar: float = 1e-6,
        random_state: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.n_iter = n_iter
        self.reg_covar = reg_covar
        self.random_state = random_state

    def _validate_params(self, X: NDArray) -> None:
        check_int("n_components", self.n_components, minimum=1)
        check_choice("covariance_type", self.covariance_type, ("full", "diag"))
        check_int("n_iter", self.n_iter, minimum=0)
        check_float("reg_covar", self.reg_covar, minimum=0.0)

    def _fit(self, X: jax.Array, seed: int) -> dict:
        _, labels = kmeans_partition(np.asarray(X), self.n_components, seed)
        resp0 = jax.nn.one_hot(labels, self.n_components, dtype=X.dtype)
        params, history = _em(resp0, X, self.reg_covar, self.n_iter, self.covariance_type == "diag")
        self.loglik_history_ = np.asarray(history)
        return params

    @property
    def means_(self) -> NDArray[np.float32]:
        self._check_fitted()
        return np.asarray(self.params_["means"])

    @property
    def covariances_(self) -> NDArray[np.float32]:
        self._check_fitted()
        return np.asarray(self.params_["cov"])
