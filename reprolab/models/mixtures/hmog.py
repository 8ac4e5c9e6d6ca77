"""Hierarchical mixture of Gaussians (HMoG) and its full-interaction variant.

HMoG: p(x, y, k) = p(k) p(y | k) p(x | y) with y | k ~ N(m_k, S_k) in an L-dimensional latent space and
x | y ~ N(W y + b, diag psi). Every x-k dependence goes through y. The *full* variant adds per-component
observable offsets c_k and loading offsets dW_k (x | y, k ~ N((W + dW_k) y + b + c_k, diag psi)), the direct
x-k coupling note 001 credits for its higher NMI. Both marginals are factor-analytic mixtures with
mean_k = W_k m_k + b + c_k and loadings W_k chol(S_k), so they share the MFA kernel.

Two trainers:
- ``trainer="em"`` (hierarchical only): exact EM; the latent posterior given x is a Gaussian mixture, the
  M-step has closed forms for (pi, m_k, S_k) and a shared regression for (W, b, psi).
- ``trainer="gradient"``: the goal-apps "gradient EM": per epoch a full-batch E-step fixes the
  responsibilities, then ``steps_per_epoch`` Adam steps on the expected complete-data loss
  -E_r[log p(k) + log p(x | k)] + ent_reg * (-H(pi)) + l2_reg * ||(W, dW, c)||^2, each step followed by the
  bounds (variance floor, weights clipped to ``min_weight`` and renormalised, latent prior whitened).

Whitening the latent mixture to mean 0 / covariance I after every update fixes the affine gauge freedom of
y without changing the likelihood.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from numpy.typing import NDArray

from reprolab.models.mixtures._adam import adam_init, adam_update
from reprolab.models.mixtures._base import FactorMixtureModel, run_em
from reprolab.models.mixtures._chunk import chunk_rows, chunked_map, chunked_sum
from reprolab.models.mixtures._factor import (
    factor_log_prob,
    factor_posterior,
    log_responsibilities,
    solve_regression,
)
from reprolab.models.mixtures._init import kmeans_partition, partition_moments
from reprolab.models.mixtures._validation import check_choice, check_float, check_int

_LATENT_FLOOR = 1e-4  # added to the latent covariances S_k (in whitened units)


def _components(p: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(means (K, D), loadings (K, D, L), psi (K, D)) of the marginal p(x | k)."""
    k = p["m"].shape[0]
    w_k = p["W"][None] + p["dW"] if "dW" in p else jnp.broadcast_to(p["W"], (k, *p["W"].shape))
    means = jnp.einsum("kdl,kl->kd", w_k, p["m"]) + p["b"][None]
    if "c" in p:
        means = means + p["c"]
    loads = jnp.einsum("kdl,klm->kdm", w_k, p["chol"])
    return means, loads, jnp.broadcast_to(p["psi"], means.shape)


class _SharedTerms(NamedTuple):
    """Per-step precomputation of the hierarchical posterior (independent of x)."""

    proj: jax.Array  # (L, D)  W^T Psi^-1
    c_inv: jax.Array  # (K, L, L)  C_k^-1, P_k = J + S_k^-1 = C_k C_k^T, J = W^T Psi^-1 W
    c_inv_a: jax.Array  # (K, L)  C_k^-1 S_k^-1 m_k
    const: jax.Array  # (K,)  the x-independent part of log p(x | k)


def _shared_terms(p: dict) -> _SharedTerms:
    latent = p["m"].shape[1]
    eye = jnp.eye(latent, dtype=p["W"].dtype)
    inv_psi = 1.0 / p["psi"]
    proj = p["W"].T * inv_psi[None, :]
    s_inv = jax.vmap(lambda c: jax.scipy.linalg.cho_solve((c, True), eye))(p["chol"])
    c_p = jnp.linalg.cholesky(proj @ p["W"] + s_inv)
    c_inv = jax.vmap(lambda c: solve_triangular(c, eye, lower=True))(c_p)
    a = jnp.einsum("klm,km->kl", s_inv, p["m"])
    log_det_s = 2.0 * jnp.sum(jnp.log(jnp.diagonal(p["chol"], axis1=1, axis2=2)), axis=1)
    log_det_p = 2.0 * jnp.sum(jnp.log(jnp.diagonal(c_p, axis1=1, axis2=2)), axis=1)
    d = p["W"].shape[0]
    const = -0.5 * (
        d * math.log(2.0 * math.pi)
        + jnp.sum(jnp.log(p["psi"]))
        + jnp.sum(p["m"] * a, axis=1)
        + log_det_s
        + log_det_p
    )
    return _SharedTerms(proj, c_inv, jnp.einsum("klm,km->kl", c_inv, a), const)


def _hier_posterior(t: _SharedTerms, p: dict, X: jax.Array) -> tuple[jax.Array, jax.Array]:
    """log p(x | k) (N, K) and u = C_k^-1 (h + S_k^-1 m_k) (K, N, L) of plain HMoG, in O(N D L + N K L^2).

    With W, b, psi shared, x enters p(y | x, k) only through h = W^T Psi^-1 (x - b):
    log p(x | k) = log N(x; b, Psi) - m_k^T S_k^-1 m_k / 2 - log|S_k P_k| / 2 + |u_nk|^2 / 2, and
    E[y | x, k] = P_k^-1 (h + S_k^-1 m_k) = C_k^-T u_nk (see ``_latent_mean``). The E-step accumulates its
    moments in u-coordinates and maps them back once per component (K L^3) instead of once per point.
    The generic factor kernel would cost O(N K D L) instead.
    """
    e = X - p["b"][None]
    h = e @ t.proj.T
    u = jnp.einsum("klm,nm->knl", t.c_inv, h) + t.c_inv_a[:, None, :]
    quad0 = jnp.sum(e * e / p["psi"][None], axis=1)
    log_prob = t.const[None] - 0.5 * quad0[:, None] + 0.5 * jnp.sum(u * u, axis=-1).T
    return log_prob, u


def _latent_mean(t: _SharedTerms, u: jax.Array) -> jax.Array:
    """E[y | x, k] = C_k^-T u_nk, (K, N, L)."""
    return jnp.einsum("kml,knm->knl", t.c_inv, u)


def _rows(p: dict, X: jax.Array) -> int:
    return chunk_rows(X.shape[0], p["m"].shape[0] * p["m"].shape[1])


def _joint_rows(p: dict, X: jax.Array) -> jax.Array:
    if "dW" in p:  # gradient-trained models carry offsets (zero for plain HMoG): the generic kernel
        return p["log_w"][None, :] + factor_log_prob(X, *_components(p))
    return p["log_w"][None, :] + _hier_posterior(_shared_terms(p), p, X)[0]


@jax.jit
def _log_joint(p: dict, X: jax.Array) -> jax.Array:
    return chunked_map(lambda x: _joint_rows(p, x), X, _rows(p, X))


def _whiten(p: dict) -> dict:
    """Affine change of latent coordinates making the latent mixture mean 0 and covariance I."""
    w = jnp.exp(p["log_w"])
    mu = w @ p["m"]
    s = jnp.einsum("klm,knm->kln", p["chol"], p["chol"])
    cov = jnp.einsum("k,klm->lm", w, s + jnp.einsum("kl,km->klm", p["m"], p["m"])) - jnp.outer(mu, mu)
    t = jnp.linalg.cholesky(cov + 1e-6 * jnp.eye(cov.shape[0], dtype=cov.dtype))  # y = mu + t y'
    new = dict(p)
    new["m"] = jax.scipy.linalg.solve_triangular(t, (p["m"] - mu).T, lower=True).T
    new["chol"] = jax.vmap(lambda c: jax.scipy.linalg.solve_triangular(t, c, lower=True))(p["chol"])
    new["W"] = p["W"] @ t
    new["b"] = p["b"] + p["W"] @ mu
    if "dW" in p:
        new["dW"] = jnp.einsum("kdl,lm->kdm", p["dW"], t)
        new["c"] = p["c"] + jnp.einsum("kdl,l->kd", p["dW"], mu)
    return new


def _bound(p: dict, min_variance: float, min_weight: float) -> dict:
    new = dict(p)
    new["psi"] = jnp.maximum(p["psi"], min_variance)
    w = jnp.maximum(jnp.exp(p["log_w"]), min_weight)
    new["log_w"] = jnp.log(w / w.sum())
    return _whiten(new)


def _e_stats(t: _SharedTerms, p: dict, X: jax.Array, mask: jax.Array) -> dict:
    """Sufficient statistics of one row chunk, latent moments in u-coordinates (see ``_hier_posterior``)."""
    log_prob, u = _hier_posterior(t, p, X)
    log_r, log_px = log_responsibilities(p["log_w"], log_prob)
    resp = jnp.exp(log_r) * mask[:, None]
    weighted = resp.T[:, :, None] * u  # (K, N, L)
    ey = jnp.einsum("knm,kml->nl", weighted, t.c_inv)  # sum_k r_nk E[y | x_n, k]: one (N, KL) @ (KL, L)
    return {
        "nk": resp.sum(axis=0),
        "ru": weighted.sum(axis=1),
        "ruu": jnp.einsum("knl,knm->klm", weighted, u),
        "h": X.T @ jnp.concatenate([ey, mask[:, None]], axis=1),  # sum_n x_n E[y~_n]^T  (D, L+1)
        "sxx": jnp.sum(X * X * mask[:, None], axis=0),
        "loglik": jnp.sum(log_px * mask),
    }


def _em_step(p: dict, X: jax.Array, min_variance: float) -> tuple[dict, jax.Array]:
    """One exact EM iteration; the E-step runs in row chunks (memory O(rows K L))."""
    t = _shared_terms(p)
    st = chunked_sum(lambda x, mask: _e_stats(t, p, x, mask), X, _rows(p, X))
    latent = p["m"].shape[1]
    nk_raw = st["nk"]
    post_cov = jnp.einsum("kml,kmn->kln", t.c_inv, t.c_inv)  # P_k^-1
    ry = jnp.einsum("kml,km->kl", t.c_inv, st["ru"])  # sum_n r_nk E[y | x_n, k] = C^-T sum r u
    ryy = jnp.einsum("kml,kmn,knp->klp", t.c_inv, st["ruu"], t.c_inv)  # C^-T (sum r u u^T) C^-1
    ryy = ryy + nk_raw[:, None, None] * post_cov  # sum_n r_nk E[y y^T | x_n, k]
    nk = jnp.maximum(nk_raw, 1e-6)
    m = ry / nk[:, None]
    s = ryy / nk[:, None, None] - jnp.einsum("kl,km->klm", m, m)
    s = 0.5 * (s + jnp.swapaxes(s, 1, 2)) + _LATENT_FLOOR * jnp.eye(latent, dtype=X.dtype)
    n = jnp.asarray(X.shape[0], X.dtype)
    top = jnp.concatenate([ryy.sum(axis=0), ry.sum(axis=0)[:, None]], axis=1)
    g = jnp.concatenate([top, jnp.concatenate([ry.sum(axis=0), n[None]])[None]], axis=0)
    lam, psi = solve_regression(g, st["h"], st["sxx"], n, min_variance)
    new = {
        "log_w": jnp.log(nk / nk.sum()),
        "m": m,
        "chol": jnp.linalg.cholesky(s),
        "W": lam[:, :latent],
        "b": lam[:, latent],
        "psi": psi,
    }
    return _whiten(new), st["loglik"] / X.shape[0]


_em_step_jit = jax.jit(_em_step)


def _em(p: dict, X: jax.Array, min_variance: float, n_iter: int) -> tuple[dict, jax.Array]:
    return run_em(_em_step_jit, p, X, min_variance, n_iter)


def _to_free(p: dict) -> dict:
    free = {k: v for k, v in p.items() if k not in ("chol", "psi")}
    diag = jnp.diagonal(p["chol"], axis1=1, axis2=2)
    free["chol_raw"] = jnp.tril(p["chol"], -1) + jax.vmap(jnp.diag)(jnp.log(diag))
    free["log_psi"] = jnp.log(p["psi"])
    return free


def _from_free(free: dict) -> dict:
    p = {k: v for k, v in free.items() if k not in ("chol_raw", "log_psi")}
    raw = free["chol_raw"]
    p["chol"] = jnp.tril(raw, -1) + jax.vmap(jnp.diag)(jnp.exp(jnp.diagonal(raw, axis1=1, axis2=2)))
    p["psi"] = jnp.exp(free["log_psi"])
    p["log_w"] = jax.nn.log_softmax(free["log_w"])
    return p


def _loss(free: dict, X: jax.Array, resp: jax.Array, ent_reg: float, l2_reg: float) -> jax.Array:
    p = _from_free(free)
    expected = jnp.mean(jnp.sum(resp * (p["log_w"][None] + factor_log_prob(X, *_components(p))), axis=1))
    weights = jnp.exp(p["log_w"])
    entropy = -jnp.sum(weights * p["log_w"])
    l2 = jnp.sum(free["W"] ** 2) + jnp.sum(free["dW"] ** 2) + jnp.sum(free["c"] ** 2)
    return -expected - ent_reg * entropy + l2_reg * l2


@partial(jax.jit, static_argnames=("steps_per_epoch",))
def _gradient_epoch(
    free, opt, X, lr, ent_reg, l2_reg, min_variance, min_weight, offsets_on, steps_per_epoch: int
):
    """One gradient-EM epoch: a full-batch E-step, then ``steps_per_epoch`` bounded Adam steps.

    ``offsets_on`` (0 or 1, traced) freezes the full model's offsets dW, c at zero for plain HMoG, so both
    variants share one compiled function.
    """
    p_now = _from_free(free)
    log_r, log_px = log_responsibilities(p_now["log_w"], factor_log_prob(X, *_components(p_now)))
    resp = jax.lax.stop_gradient(jnp.exp(log_r))

    def step(carry, _):
        free, opt = carry
        grads = jax.grad(_loss)(free, X, resp, ent_reg, l2_reg)
        grads = dict(grads, dW=grads["dW"] * offsets_on, c=grads["c"] * offsets_on)
        free, opt = adam_update(free, grads, opt, lr)
        return (_to_free(_bound(_from_free(free), min_variance, min_weight)), opt), None

    (free, opt), _ = jax.lax.scan(step, (free, opt), None, length=steps_per_epoch)
    return free, opt, jnp.mean(log_px)


def _gradient_em(
    p: dict, X, lr, ent_reg, l2_reg, min_variance, min_weight, offsets_on, n_epochs, steps_per_epoch
):
    free = _to_free(p)
    opt = adam_init(free)
    history = []
    for _ in range(n_epochs):
        free, opt, loglik = _gradient_epoch(
            free, opt, X, lr, ent_reg, l2_reg, min_variance, min_weight, offsets_on, steps_per_epoch
        )
        history.append(loglik)
    return _from_free(free), jnp.asarray(history, dtype=X.dtype)


def _reconstruct_rows(p: dict, X: jax.Array) -> jax.Array:
    if "dW" not in p:  # plain HMoG: E[x | x] = W E[y | x] + b with the shared map
        t = _shared_terms(p)
        log_prob, u = _hier_posterior(t, p, X)
        log_r, _ = log_responsibilities(p["log_w"], log_prob)
        return jnp.einsum("kn,knl->nl", jnp.exp(log_r).T, _latent_mean(t, u)) @ p["W"].T + p["b"][None]
    means, loads, psi = _components(p)
    post = factor_posterior(X, means, loads, psi)
    resp = jnp.exp(log_responsibilities(p["log_w"], post.log_prob)[0])
    return resp @ means + jnp.einsum("knl,kdl->nd", resp.T[:, :, None] * post.mean, loads)


@jax.jit
def _reconstruct(p: dict, X: jax.Array) -> jax.Array:
    return chunked_map(lambda x: _reconstruct_rows(p, x), X, _rows(p, X))


class HierarchicalMixture(FactorMixtureModel):
    """HMoG (``interaction="hierarchical"``) or the full-interaction model (``interaction="full"``).

    ``n_iter`` is the number of EM iterations (``trainer="em"``) or of gradient-EM epochs
    (``trainer="gradient"``, each one E-step and ``steps_per_epoch`` Adam steps at ``learning_rate``).
    """

    _log_joint_fn = staticmethod(_log_joint)
    _reconstruct_fn = staticmethod(_reconstruct)

    def __init__(
        self,
        n_components: int = 10,
        latent_dim: int = 10,
        *,
        interaction: str = "hierarchical",
        trainer: str = "em",
        n_iter: int = 100,
        steps_per_epoch: int = 10,
        learning_rate: float = 1e-2,
        ent_reg: float = 0.0,
        l2_reg: float = 0.0,
        min_variance: float = 1e-3,
        min_weight: float = 1e-6,
        random_state: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.latent_dim = latent_dim
        self.interaction = interaction
        self.trainer = trainer
        self.n_iter = n_iter
        self.steps_per_epoch = steps_per_epoch
        self.learning_rate = learning_rate
        self.ent_reg = ent_reg
        self.l2_reg = l2_reg
        self.min_variance = min_variance
        self.min_weight = min_weight
        self.random_state = random_state

    def _validate_params(self, X: NDArray) -> None:
        check_int("n_components", self.n_components, minimum=1)
        self._check_latent_dim(X)
        check_choice("interaction", self.interaction, ("hierarchical", "full"))
        check_choice("trainer", self.trainer, ("em", "gradient"))
        if self.interaction == "full" and self.trainer == "em":
            raise ValueError("interaction='full' has no closed-form M-step here; use trainer='gradient'")
        check_int("n_iter", self.n_iter, minimum=0)
        check_int("steps_per_epoch", self.steps_per_epoch, minimum=1)
        check_float("learning_rate", self.learning_rate, minimum=0.0, strict=True)
        check_float("ent_reg", self.ent_reg, minimum=0.0)
        check_float("l2_reg", self.l2_reg, minimum=0.0)
        check_float("min_variance", self.min_variance, minimum=0.0, strict=True)
        check_float("min_weight", self.min_weight, minimum=0.0)
        if self.min_weight * self.n_components >= 1.0:
            raise ValueError(f"min_weight={self.min_weight} times n_components must be below 1")

    def _init_params(self, X: NDArray, seed: int) -> dict:
        """PPCA for (W, b, psi); k-means in the whitened PCA scores for (pi, m_k, S_k)."""
        latent, k = self.latent_dim, self.n_components
        mean = X.mean(axis=0)
        centred = (X - mean).astype(np.float64)
        evals, evecs = np.linalg.eigh(centred.T @ centred / X.shape[0])
        evals, evecs = evals[::-1], evecs[:, ::-1]
        top = np.maximum(evals[:latent], 1e-8)
        sigma2 = max(float(evals[latent:].mean()), self.min_variance)
        W = evecs[:, :latent] * np.sqrt(np.maximum(top - sigma2, 1e-6))
        psi = np.maximum(np.diag(centred.T @ centred) / X.shape[0] - (W**2).sum(axis=1), self.min_variance)
        scores = (centred @ evecs[:, :latent] / np.sqrt(top)).astype(np.float32)
        _, labels = kmeans_partition(scores, k, seed)
        weights, m, var = partition_moments(scores, labels, k, 0.05)
        p = {
            "log_w": jnp.log(jnp.asarray(np.maximum(weights, self.min_weight))),
            "m": jnp.asarray(m),
            "chol": jax.vmap(jnp.diag)(jnp.sqrt(jnp.asarray(var))),
            "W": jnp.asarray(W, dtype=jnp.float32),
            "b": jnp.asarray(mean, dtype=jnp.float32),
            "psi": jnp.asarray(psi, dtype=jnp.float32),
        }
        if self.trainer == "gradient":  # offsets exist (frozen at zero unless interaction="full")
            p["dW"] = jnp.zeros((k, X.shape[1], latent), jnp.float32)
            p["c"] = jnp.zeros((k, X.shape[1]), jnp.float32)
        return _whiten(p)

    def _fit(self, X: jax.Array, seed: int) -> dict:
        p = self._init_params(np.asarray(X), seed)
        if self.trainer == "em":
            p, history = _em(p, X, self.min_variance, self.n_iter)
        else:
            p, history = _gradient_em(
                p, X, self.learning_rate, self.ent_reg, self.l2_reg, self.min_variance, self.min_weight,
                float(self.interaction == "full"), self.n_iter, self.steps_per_epoch,
            )  # fmt: skip
        self.loglik_history_ = np.asarray(history)
        return p

    def latent_gaussians(self) -> tuple[NDArray, NDArray]:
        """Latent component means m_k (K, L) and covariances S_k (K, L, L) (for the symmetric-KL merger)."""
        self._check_fitted()
        chol = self.params_["chol"]
        return np.asarray(self.params_["m"]), np.asarray(jnp.einsum("klm,knm->kln", chol, chol))


class FullInteractionMixture(HierarchicalMixture):
    """HMoG plus direct x-k coupling (per-component offsets c_k and dW_k), trained by gradient EM."""

    def __init__(self, n_components: int = 10, latent_dim: int = 10, **kwargs) -> None:
        kwargs.setdefault("trainer", "gradient")
        super().__init__(n_components, latent_dim, interaction="full", **kwargs)
