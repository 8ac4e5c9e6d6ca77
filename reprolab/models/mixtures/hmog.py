"""Hierarchical mixture of Gaussians (HMoG) and its full-interaction variant.

HMoG: p(x, y, k) = p(k) p(y | k) p(x | y) with y | k ~ N(m_k, S_k) in an L-dimensional latent space and
x | y ~ N(W y + b, diag psi). Every x-k dependence goes through y. The *full* variant adds per-component
observable offsets c_k and loading offsets dW_k (x | y, k ~ N((W + dW_k) y + b + c_k, diag psi)), the direct
x-k coupling note 001 credits for its higher NMI. Both marginals are factor-analytic mixtures with
mean_k = W_k m_k + b + c_k and loadings W_k chol(S_k), so they share the MFA kernel.

Two trainers:
- ``trainer="em"`` (hierarchical only): exact EM; the latent posterior given x is a Gaussian mixture, the
  M-step has closed forms for (pi, m_k, S_k) and a shared regression for (W, b, psi).
- ``trainer="gradient"``: the reference trainer of goal-apps' HMoG (``FullGradientTrainer``), sharing its
  core with MFA's (``_gradient``): per epoch one full-batch E-step gives each component's posterior
  statistics (in y-coordinates), bounded as the reference's ``bound_means`` (observable variance floor,
  weights clipped at ``min_prob``, latent statistics whitened against their marginal and floored at
  ``lat_min_var``), then ``steps_per_epoch`` clipped AdamW steps in natural coordinates on the negative
  expected complete-data log-likelihood plus the precision-eigenvalue penalty on the latent component
  precisions, ``l2_reg`` and ``ent_reg``. A step costs O(K D L^2), independent of N.

Whitening the latent mixture to mean 0 / covariance I after every update fixes the affine gauge freedom of
y without changing the likelihood.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from numpy.typing import NDArray

from reprolab.models.mixtures import _gradient as core
from reprolab.models.mixtures._base import FactorMixtureModel, run_em
from reprolab.models.mixtures._chunk import chunk_rows, chunked_map, chunked_sum
from reprolab.models.mixtures._factor import (
    factor_log_prob,
    factor_posterior,
    factor_sums,
    log_responsibilities,
    solve_regression,
)
from reprolab.models.mixtures._gradient import TrainerSettings, statistics_from_sums
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


# ---- the reference gradient trainer (goal-apps' HMoG ``FullGradientTrainer``; core in ``_gradient``) ----


def _to_natural(p: dict) -> dict:
    """(log_w, m, chol, W, b, psi[, dW, c]) -> natural coordinates of x | y, k and y | k, and the logits.

    x | y, k: eta = Psi^-1 (b [+ c_k]), half_prec = Psi^-1 / 2, B = Psi^-1 (W [+ dW_k]) (the offsets as
    ``eta_c``, ``dB``); y | k: lat_eta = P_k m_k with the precision P_k = S_k^-1 = C_k C_k^T stored as
    ``lat_raw`` (C_k with log diagonal), so P_k stays positive definite under any update.
    """
    inv_psi = 1.0 / p["psi"]
    eye = jnp.eye(p["m"].shape[1], dtype=p["m"].dtype)
    prec = jax.vmap(lambda c: jax.scipy.linalg.cho_solve((c, True), eye))(p["chol"])
    c_prec = jnp.linalg.cholesky(prec)
    theta = {
        "logits": p["log_w"],
        "eta": p["b"] * inv_psi,
        "half_prec": 0.5 * inv_psi,
        "B": p["W"] * inv_psi[:, None],
        "lat_eta": jnp.einsum("klm,km->kl", prec, p["m"]),
        "lat_raw": jnp.tril(c_prec, -1) + jnp.log(jnp.diagonal(c_prec, axis1=1, axis2=2))[..., None] * eye,
    }
    if "dW" in p:
        theta["eta_c"] = p["c"] * inv_psi[None]
        theta["dB"] = p["dW"] * inv_psi[None, :, None]
    return theta


def _from_natural(theta: dict, obs_min_var: float) -> dict:
    """Natural coordinates -> the model's parameters; psi is kept at or above ``obs_min_var``."""
    psi = 1.0 / jnp.clip(2.0 * theta["half_prec"], 1e-6, 1.0 / obs_min_var)
    c_prec = core.precision_factor(theta["lat_raw"])
    eye = jnp.eye(c_prec.shape[1], dtype=psi.dtype)
    cov = jax.vmap(lambda c: jax.scipy.linalg.cho_solve((c, True), eye))(c_prec)
    p = {
        "log_w": jax.nn.log_softmax(theta["logits"]),
        "m": jax.vmap(lambda c, v: jax.scipy.linalg.cho_solve((c, True), v))(c_prec, theta["lat_eta"]),
        "chol": jnp.linalg.cholesky(0.5 * (cov + jnp.swapaxes(cov, 1, 2))),
        "W": theta["B"] * psi[:, None],
        "b": theta["eta"] * psi,
        "psi": psi,
    }
    if "dB" in theta:
        p["dW"] = theta["dB"] * psi[None, :, None]
        p["c"] = theta["eta_c"] * psi[None]
    return p


# Jitted once per shape: run eagerly, each of their many small ops would compile a kernel of its own.
_whiten_jit = jax.jit(_whiten)
_natural_init = jax.jit(lambda p: _to_natural(_whiten(p)))
_from_natural_jit = jax.jit(_from_natural)


def _gradient_loss(theta: dict, stats, cfg) -> jax.Array:
    """-E[log p(k) + log p(y | k) + log p(x | y, k)] under the bounded statistics, plus the regularisers.

    Plain HMoG shares x | y across components, so its observable term is linear in the weight-averaged
    statistics: it is evaluated once on those (O(D L^2) per step) instead of per component (O(K D L^2)).
    """
    c_prec = core.precision_factor(theta["lat_raw"])  # the latent component precisions P_k = C C^T
    log_w = jax.nn.log_softmax(theta["logits"])
    if "dB" in theta:  # full model: per-component x | y, k
        obs = core.observable_nll(
            log_w, theta["eta"][None] + theta["eta_c"], jnp.broadcast_to(theta["half_prec"], theta["eta_c"].shape),
            theta["B"][None] + theta["dB"], stats, cfg.obs_min_var,
        )  # fmt: skip
    else:
        w = stats.weights
        pooled = core.ComponentStatistics(
            jnp.ones((1,), w.dtype), (w @ stats.ex)[None], (w @ stats.exx)[None],
            jnp.einsum("k,kdl->dl", w, stats.exz)[None], (w @ stats.ez)[None], jnp.einsum("k,klm->lm", w, stats.ezz)[None],
        )  # fmt: skip
        zero = jnp.zeros((1,), log_w.dtype)  # log p(k) enters below, weighted by the unpooled weights
        obs = core.observable_nll(
            zero, theta["eta"][None], theta["half_prec"][None], theta["B"][None], pooled, cfg.obs_min_var
        ) - jnp.sum(w * log_w)
    return obs + core.latent_nll(theta["lat_eta"], c_prec, stats) + core.penalties(theta, c_prec, cfg)


def _gradient_bound(stats, cfg):
    """The HMoG reference's ``bound_means``: observable floor and weight clip, whitened and floored latents."""
    return core.whiten_latents(core.floor_observable(stats, cfg.obs_min_var, cfg.min_prob), cfg.lat_min_var)


@jax.jit
def _gradient_e_step(theta: dict, X: jax.Array, cfg):
    """Posterior statistics in y-coordinates at the current parameters, and the mean log-likelihood.

    The factor kernel's posterior is over z with y = m_k + chol_k z, so [y; 1] = A_k [z; 1] with
    A_k = [[chol_k, m_k], [0, 1]], and the sums map as G_y = A G_z A^T, H_y = H_z A^T.
    """
    p = _from_natural(theta, cfg.obs_min_var)
    means, loads, psi = _components(p)
    sums = factor_sums({"log_w": p["log_w"], "means": means, "loads": loads, "psi": psi}, X)
    k, latent = p["m"].shape
    top = jnp.concatenate([p["chol"], p["m"][:, :, None]], axis=2)
    bottom = jnp.broadcast_to(jnp.eye(latent + 1, dtype=X.dtype)[latent], (k, 1, latent + 1))
    a = jnp.concatenate([top, bottom], axis=1)  # (K, L+1, L+1)
    g = jnp.einsum("klm,kmn,kpn->klp", a, sums["g"], a)
    h = jnp.einsum("kdm,klm->kdl", sums["h"], a)
    return statistics_from_sums(sums["nk"], g, h, sums["sxx"]), sums["loglik"] / X.shape[0]


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


@jax.jit
def _summary(p: dict, X: jax.Array) -> jax.Array:
    """[log p(k) + log p(x | k) | reconstruction] (N, K + D) in one compiled pass (one compilation per shape)."""
    return chunked_map(
        lambda x: jnp.concatenate([_joint_rows(p, x), _reconstruct_rows(p, x)], axis=1), X, _rows(p, X)
    )


class HierarchicalMixture(FactorMixtureModel):
    """HMoG (``interaction="hierarchical"``) or the full-interaction model (``interaction="full"``).

    ``n_iter`` is the number of EM iterations (``trainer="em"``) or of gradient epochs (``trainer="gradient"``,
    the reference trainer: each one full-batch E-step and ``steps_per_epoch`` clipped AdamW steps on the
    bounded statistics). The gradient settings default to the reference's (goal-apps' HMoG
    ``GradientTrainerConfig``): ``learning_rate`` 1e-4, ``steps_per_epoch`` (its ``batch_steps``) 1,000,
    ``grad_clip`` 8.0, ``weight_decay`` 1e-4 (optax.adamw), ``upr_prs_reg`` = ``lwr_prs_reg`` = 1e-3,
    ``obs_min_var`` 1e-5, ``lat_min_var`` 1e-6, ``min_prob`` 1e-4, ``l2_reg`` = ``ent_reg`` = 0.
    ``min_variance`` floors exact EM's noise and the PPCA init; ``min_weight`` floors EM's init weights.
    """

    _log_joint_fn = staticmethod(_log_joint)
    _reconstruct_fn = staticmethod(_reconstruct)
    _summary_fn = staticmethod(_summary)

    def __init__(
        self,
        n_components: int = 10,
        latent_dim: int = 10,
        *,
        interaction: str = "hierarchical",
        trainer: str = "em",
        n_iter: int = 100,
        steps_per_epoch: int = 1000,
        learning_rate: float = 1e-4,
        grad_clip: float = 8.0,
        weight_decay: float = 1e-4,
        upr_prs_reg: float = 1e-3,
        lwr_prs_reg: float = 1e-3,
        ent_reg: float = 0.0,
        l2_reg: float = 0.0,
        obs_min_var: float = 1e-5,
        lat_min_var: float = 1e-6,
        min_prob: float = 1e-4,
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
        self.grad_clip = grad_clip
        self.weight_decay = weight_decay
        self.upr_prs_reg = upr_prs_reg
        self.lwr_prs_reg = lwr_prs_reg
        self.ent_reg = ent_reg
        self.l2_reg = l2_reg
        self.obs_min_var = obs_min_var
        self.lat_min_var = lat_min_var
        self.min_prob = min_prob
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
        for name in (
            "grad_clip",
            "weight_decay",
            "upr_prs_reg",
            "lwr_prs_reg",
            "ent_reg",
            "l2_reg",
            "lat_min_var",
        ):
            check_float(name, getattr(self, name), minimum=0.0)
        check_float("obs_min_var", self.obs_min_var, minimum=0.0, strict=True)
        check_float("min_variance", self.min_variance, minimum=0.0, strict=True)
        check_float("min_weight", self.min_weight, minimum=0.0)
        check_float("min_prob", self.min_prob, minimum=0.0)
        for name in ("min_weight", "min_prob"):
            if getattr(self, name) * self.n_components >= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} times n_components must be below 1")

    def settings(self) -> TrainerSettings:
        """The gradient trainer's hyperparameters (``steps_per_epoch`` apart)."""
        return TrainerSettings(
            float(self.learning_rate), float(self.grad_clip), float(self.weight_decay), float(self.upr_prs_reg),
            float(self.lwr_prs_reg), float(self.l2_reg), float(self.ent_reg), float(self.obs_min_var),
            float(self.min_prob), float(self.lat_min_var),
        )  # fmt: skip

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
        if self.interaction == "full":  # direct x-k offsets, from zero
            p["dW"] = jnp.zeros((k, X.shape[1], latent), jnp.float32)
            p["c"] = jnp.zeros((k, X.shape[1]), jnp.float32)
        return p

    def _fit(self, X: jax.Array, seed: int) -> dict:
        p = self._init_params(np.asarray(X), seed)
        if self.trainer == "em":
            p, history = _em(_whiten_jit(p), X, self.min_variance, self.n_iter)
        else:
            cfg = self.settings()
            theta, history = core.train(
                _natural_init(p), X, _gradient_e_step, _gradient_bound, _gradient_loss, cfg,
                int(self.steps_per_epoch), self.n_iter,
            )  # fmt: skip
            p = _from_natural_jit(theta, cfg.obs_min_var)
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
