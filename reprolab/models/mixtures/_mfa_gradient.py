"""The MFA "gradient trainer" of note 000's publication runs (after goal-apps' MFA ``GradientTrainer``).

Exact EM jumps to the M-step optimum every iteration; at K >> classes that drives MFA's responsibilities hard
(each point owned by one component with probability > 0.99), and co-assignment then has nothing to merge.
The reference trains differently, and this module follows its recipe:

1. Per epoch, one full-batch E-step gives the posterior statistics (per component: weight, E[x], E[x^2],
   E[x z^T], E[z], E[z z^T]; averages over the data).
2. ``bound_statistics`` bounds them in mean coordinates: each component's observable variance
   E[x^2] - E[x]^2 is floored at ``obs_min_var``; the weights are clipped at ``min_prob`` and renormalised;
   every component's latent statistics are reset to N(0, I) (E[z] = 0, E[z z^T] = I).
3. ``batch_steps`` AdamW steps (gradient clipped to global norm ``grad_clip``) on the natural parameters
   theta of x | z, k ~ N(mu_k + Lambda_k z, Psi_k):  eta_k = Psi_k^-1 mu_k,  h_k = Psi_k^-1 / 2 (minus the
   natural precision parameter),  B_k = Psi_k^-1 Lambda_k, and the mixture logits. The loss is the
   negative expected complete-data log-likelihood under the *bounded* statistics, whose gradient in natural
   coordinates is (model statistics - bounded posterior statistics), the reference's update direction, plus
   regularisers: ``upr_prs_reg`` tr(M_k) - ``lwr_prs_reg`` log|M_k| on the latent precision of each
   component's harmonium (M_k = I + Lambda_k^T Psi_k^-1 Lambda_k when the latent prior is N(0, I)),
   ``l2_reg`` ||theta||^2 and ``ent_reg`` (-H(pi)).

A small learning rate in natural coordinates is what keeps the regime soft: a precision can grow by at most
~lr per Adam step, so after ``n_epochs * batch_steps`` steps no variance has collapsed far below its
initial value (the reference initialises every component with the *mean* data variance, isotropic).
Differences from the reference, stated: our latent prior is fixed at N(0, I) (the reference learns it and
pulls it back to N(0, I) through the bounded statistics), and the model statistics are taken under the
posterior latent moments (the expected complete-data log-likelihood) rather than the harmonium's prior.
The per-step loss costs O(K D L^2), independent of N, so many inner steps are cheap.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from reprolab.models.mixtures._adam import adam_init, adam_update, clip_by_global_norm


class MFAStatistics(NamedTuple):
    """Per-component averages over the data (weights sum to 1; the rest are per-unit-weight means)."""

    weights: jax.Array  # (K,)
    ex: jax.Array  # (K, D)  E[x | k]
    exx: jax.Array  # (K, D)  E[x^2 | k]
    exz: jax.Array  # (K, D, L)  E[x z^T | k]
    ez: jax.Array  # (K, L)
    ezz: jax.Array  # (K, L, L)


def statistics_from_em(nk: jax.Array, g: jax.Array, h: jax.Array, sxx: jax.Array) -> MFAStatistics:
    """Posterior statistics from the EM E-step sums (``mfa._e_stats``: nk, G = sum r [z;1][z;1]^T, H, sxx)."""
    latent = g.shape[1] - 1
    safe = jnp.maximum(nk, 1e-12)
    return MFAStatistics(
        weights=nk / nk.sum(),
        ex=h[:, :, latent] / safe[:, None],
        exx=sxx / safe[:, None],
        exz=h[:, :, :latent] / safe[:, None, None],
        ez=g[:, :latent, latent] / safe[:, None],
        ezz=g[:, :latent, :latent] / safe[:, None, None],
    )


def bound_statistics(stats: MFAStatistics, obs_min_var: float, min_prob: float) -> MFAStatistics:
    """The reference's ``bound_means``: variance floor, clipped and renormalised weights, latents reset to N(0, I)."""
    var = jnp.maximum(stats.exx - stats.ex**2, obs_min_var)
    weights = jnp.clip(stats.weights, min_prob, 1.0)
    k, latent = stats.ez.shape
    return MFAStatistics(
        weights=weights / weights.sum(),
        ex=stats.ex,
        exx=stats.ex**2 + var,
        exz=stats.exz,
        ez=jnp.zeros_like(stats.ez),
        ezz=jnp.broadcast_to(jnp.eye(latent, dtype=stats.ezz.dtype), (k, latent, latent)),
    )


def to_natural(params: dict) -> dict:
    """(log_w, means, loads, psi) -> natural coordinates (logits, eta, half precision h, B)."""
    inv_psi = 1.0 / params["psi"]
    return {
        "logits": params["log_w"],
        "eta": params["means"] * inv_psi,
        "half_prec": 0.5 * inv_psi,
        "B": params["loads"] * inv_psi[:, :, None],
    }


def from_natural(theta: dict, obs_min_var: float) -> dict:
    """Natural coordinates -> (log_w, means, loads, psi); psi is kept at or above ``obs_min_var``."""
    prec = jnp.clip(2.0 * theta["half_prec"], 1e-6, 1.0 / obs_min_var)  # safeguard: psi in [obs_min_var, 1e6]
    psi = 1.0 / prec
    return {
        "log_w": jax.nn.log_softmax(theta["logits"]),
        "means": theta["eta"] * psi,
        "loads": theta["B"] * psi[:, :, None],
        "psi": psi,
    }


def _latent_precision(theta: dict, obs_min_var: float) -> jax.Array:
    """M_k = I + B_k^T Psi_k B_k (= I + Lambda^T Psi^-1 Lambda), the harmonium's latent precision (K, L, L)."""
    psi = 1.0 / jnp.clip(2.0 * theta["half_prec"], 1e-6, 1.0 / obs_min_var)
    latent = theta["B"].shape[2]
    return jnp.eye(latent, dtype=psi.dtype) + jnp.einsum("kdl,kd,kdm->klm", theta["B"], psi, theta["B"])


def expected_nll(theta: dict, stats: MFAStatistics, obs_min_var: float) -> jax.Array:
    """-E[log p(x, z, k)] per data point under ``stats``, in natural coordinates (O(K D L^2), no N)."""
    prec = jnp.clip(2.0 * theta["half_prec"], 1e-6, 1.0 / obs_min_var)
    eta, b = theta["eta"], theta["B"]
    # E[(eta + B z)_d^2] = eta_d^2 + 2 eta_d B_d E[z] + B_d E[z z^T] B_d^T
    quad = (
        eta**2
        + 2.0 * eta * jnp.einsum("kdl,kl->kd", b, stats.ez)
        + jnp.einsum("kdl,klm,kdm->kd", b, stats.ezz, b)
    )
    d = eta.shape[1]
    per_comp = (
        -0.5 * jnp.sum(prec * stats.exx, axis=1)
        + jnp.sum(eta * stats.ex, axis=1)
        + jnp.sum(b * stats.exz, axis=(1, 2))
        - 0.5 * jnp.sum(quad / prec, axis=1)
        + 0.5 * jnp.sum(jnp.log(prec), axis=1)
        - 0.5 * d * math.log(2.0 * math.pi)
    )
    log_w = jax.nn.log_softmax(theta["logits"])
    return -jnp.sum(stats.weights * (log_w + per_comp))


class TrainerSettings(NamedTuple):
    """Hyperparameters of the gradient trainer (hashable: a jit static argument)."""

    learning_rate: float
    batch_steps: int
    grad_clip: float
    weight_decay: float
    upr_prs_reg: float
    lwr_prs_reg: float
    l2_reg: float
    ent_reg: float
    obs_min_var: float
    min_prob: float


def regularised_loss(theta: dict, stats: MFAStatistics, cfg: TrainerSettings) -> jax.Array:
    loss = expected_nll(theta, stats, cfg.obs_min_var)
    if cfg.upr_prs_reg or cfg.lwr_prs_reg:  # static: the note's config switches them off
        m = _latent_precision(theta, cfg.obs_min_var)
        trace = jnp.trace(m, axis1=1, axis2=2)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(m), axis1=1, axis2=2)), axis=1)
        loss = loss + cfg.upr_prs_reg * jnp.sum(trace) - cfg.lwr_prs_reg * jnp.sum(logdet)
    if cfg.l2_reg:
        loss = loss + cfg.l2_reg * sum(jnp.sum(v * v) for v in jax.tree_util.tree_leaves(theta))
    if cfg.ent_reg:
        log_w = jax.nn.log_softmax(theta["logits"])
        loss = loss + cfg.ent_reg * jnp.sum(jnp.exp(log_w) * log_w)  # ent_reg * (-H(pi))
    return loss


@partial(jax.jit, static_argnames=("cfg",))
def inner_steps(theta: dict, opt, stats: MFAStatistics, cfg: TrainerSettings):
    """``cfg.batch_steps`` clipped AdamW steps on the loss for fixed bounded statistics."""
    bounded = bound_statistics(stats, cfg.obs_min_var, cfg.min_prob)
    grad_fn = jax.grad(regularised_loss)

    def step(carry, _):
        theta, opt = carry
        grads = clip_by_global_norm(grad_fn(theta, bounded, cfg), cfg.grad_clip)
        theta, opt = adam_update(theta, grads, opt, cfg.learning_rate, weight_decay=cfg.weight_decay)
        return (theta, opt), None

    (theta, opt), _ = jax.lax.scan(step, (theta, opt), None, length=cfg.batch_steps)
    return theta, opt


def init_optimizer(theta: dict):
    return adam_init(theta)
