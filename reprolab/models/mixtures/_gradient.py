"""The reference "gradient trainer" core (goal-apps' MFA ``GradientTrainer`` and HMoG ``FullGradientTrainer``).

Both reference trainers share one recipe, and MFA and HMoG share this module:

1. Per epoch one full-batch E-step gives the posterior statistics of every component (``ComponentStatistics``:
   weight, E[x], E[x^2], E[x y^T], E[y], E[y y^T], averages over the data).
2. A model-specific ``bound`` (the reference's ``bound_means``) bounds them in mean coordinates; the shared
   pieces are here: ``floor_observable`` (each component's observable variance floored at ``obs_min_var``,
   weights clipped at ``min_prob`` and renormalised), ``reset_latents`` (MFA: every latent to N(0, I)) and
   ``whiten_latents`` (HMoG: the latent statistics whitened against their own marginal, each component's
   latent variance floored at ``lat_min_var``).
3. ``batch_steps`` AdamW steps (gradient clipped to global norm ``grad_clip``) on the model's loss for the
   bounded statistics, the negative expected complete-data log-likelihood (``observable_nll`` for the
   linear-Gaussian x | y, k and ``latent_nll`` for a Gaussian y | k, in natural coordinates, so the gradient
   is model statistics minus bounded posterior statistics, the reference's update direction) plus the
   reference's regularisers (``penalties``: precision eigenvalues, L2, mixture entropy).

The per-step loss costs O(K D L^2), independent of N. Hyperparameters are traced (``TrainerSettings`` is a
pytree of floats), so a learning-rate sweep shares one compiled epoch; only ``batch_steps`` is static.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from reprolab.models.mixtures._adam import adam_init, adam_update, clip_by_global_norm


class ComponentStatistics(NamedTuple):
    """Per-component averages over the data (weights sum to 1; the rest are per-unit-weight means)."""

    weights: jax.Array  # (K,)
    ex: jax.Array  # (K, D)  E[x | k]
    exx: jax.Array  # (K, D)  E[x^2 | k]
    exz: jax.Array  # (K, D, L)  E[x y^T | k]
    ez: jax.Array  # (K, L)
    ezz: jax.Array  # (K, L, L)


class TrainerSettings(NamedTuple):
    """Hyperparameters of the gradient trainer (floats are traced: changing one never recompiles)."""

    learning_rate: float
    grad_clip: float
    weight_decay: float
    upr_prs_reg: float
    lwr_prs_reg: float
    l2_reg: float
    ent_reg: float
    obs_min_var: float
    min_prob: float
    lat_min_var: float = 0.0


def statistics_from_sums(nk: jax.Array, g: jax.Array, h: jax.Array, sxx: jax.Array) -> ComponentStatistics:
    """Statistics from the factor E-step sums (``_factor.factor_sums``: nk, G = sum r [y;1][y;1]^T, H, sxx)."""
    latent = g.shape[1] - 1
    safe = jnp.maximum(nk, 1e-12)
    return ComponentStatistics(
        weights=nk / nk.sum(),
        ex=h[:, :, latent] / safe[:, None],
        exx=sxx / safe[:, None],
        exz=h[:, :, :latent] / safe[:, None, None],
        ez=g[:, :latent, latent] / safe[:, None],
        ezz=g[:, :latent, :latent] / safe[:, None, None],
    )


def floor_observable(stats: ComponentStatistics, obs_min_var: float, min_prob: float) -> ComponentStatistics:
    """Observable variance floored at ``obs_min_var``; weights clipped at ``min_prob`` and renormalised."""
    var = jnp.maximum(stats.exx - stats.ex**2, obs_min_var)
    weights = jnp.clip(stats.weights, min_prob, 1.0)
    return stats._replace(weights=weights / weights.sum(), exx=stats.ex**2 + var)


def reset_latents(stats: ComponentStatistics) -> ComponentStatistics:
    """Every component's latent statistics reset to N(0, I) (the MFA reference's ``bound_means``)."""
    k, latent = stats.ez.shape
    eye = jnp.broadcast_to(jnp.eye(latent, dtype=stats.ezz.dtype), (k, latent, latent))
    return stats._replace(ez=jnp.zeros_like(stats.ez), ezz=eye)


def whiten_latents(stats: ComponentStatistics, lat_min_var: float) -> ComponentStatistics:
    """The HMoG reference's latent bound: whiten against the latent marginal, floor each component's variance.

    y' = T^-1 (y - mu) with mu, T T^T the mean and covariance of the weighted latent mixture, so the marginal
    becomes N(0, I) (the reference then sets it to the standard normal). E[x y^T | k] is mapped with the same
    affine change, which keeps the bounded statistics one consistent set (the reference leaves it as is).
    """
    w = stats.weights
    latent = stats.ez.shape[1]
    eye = jnp.eye(latent, dtype=stats.ez.dtype)
    mu = w @ stats.ez
    cov = jnp.einsum("k,klm->lm", w, stats.ezz) - jnp.outer(mu, mu)
    t_inv = jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(cov + 1e-6 * eye), eye, lower=True)
    centred = stats.ez - mu[None]
    ez = centred @ t_inv.T
    second = stats.ezz - jnp.einsum("kl,m->klm", stats.ez, mu) - jnp.einsum("l,km->klm", mu, stats.ez)
    ezz = jnp.einsum("lm,kmn,pn->klp", t_inv, second + jnp.outer(mu, mu)[None], t_inv)
    exz = jnp.einsum("kdm,lm->kdl", stats.exz - jnp.einsum("kd,m->kdm", stats.ex, mu), t_inv)
    comp_var = jnp.diagonal(ezz, axis1=1, axis2=2) - ez**2
    ezz = ezz + jax.vmap(jnp.diag)(jnp.maximum(lat_min_var - comp_var, 0.0))
    return stats._replace(ez=ez, ezz=ezz, exz=exz)


def observable_nll(
    logits: jax.Array,
    eta: jax.Array,
    half_prec: jax.Array,
    b: jax.Array,
    stats: ComponentStatistics,
    obs_min_var,
) -> jax.Array:
    """-E[log p(k) + log p(x | y, k)] per data point under ``stats`` (O(K D L^2)).

    x | y, k ~ N(mu_k + Lambda_k y, Psi_k) in natural coordinates (per component, (K, D) / (K, D, L)):
    ``eta`` = Psi^-1 mu, ``half_prec`` = Psi^-1 / 2, ``b`` = Psi^-1 Lambda.
    """
    prec = jnp.clip(2.0 * half_prec, 1e-6, 1.0 / obs_min_var)  # safeguard: psi in [obs_min_var, 1e6]
    # E[(eta + B y)_d^2] = eta_d^2 + 2 eta_d B_d E[y] + B_d E[y y^T] B_d^T
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
    return -jnp.sum(stats.weights * (jax.nn.log_softmax(logits) + per_comp))


def precision_factor(raw: jax.Array) -> jax.Array:
    """Lower-triangular C with positive diagonal from an unconstrained (.., L, L) array (log diagonal)."""
    eye = jnp.eye(raw.shape[-1], dtype=raw.dtype)
    return jnp.tril(raw, -1) + jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))[..., None] * eye


def latent_nll(lat_eta: jax.Array, chol_prec: jax.Array, stats: ComponentStatistics) -> jax.Array:
    """-E[log N(y; m_k, P_k^-1)] per data point under ``stats``; natural ``lat_eta`` = P m, P = C C^T."""
    latent = lat_eta.shape[1]
    prec = jnp.einsum("klm,knm->kln", chol_prec, chol_prec)
    half = jax.vmap(lambda c, v: jax.scipy.linalg.solve_triangular(c, v, lower=True))(chol_prec, lat_eta)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_prec, axis1=1, axis2=2)), axis=1)
    per_comp = (
        0.5 * jnp.sum(prec * stats.ezz, axis=(1, 2))
        - jnp.sum(lat_eta * stats.ez, axis=1)
        + 0.5 * jnp.sum(half * half, axis=1)  # m^T P m / 2 = |C^-1 lat_eta|^2 / 2
        - 0.5 * logdet
        + 0.5 * latent * math.log(2.0 * math.pi)
    )
    return jnp.sum(stats.weights * per_comp)


def penalties(theta: dict, chol_prec: jax.Array, cfg: TrainerSettings) -> jax.Array:
    """The reference's regularisers: precision eigenvalues, L2 on every parameter, mixture entropy.

    ``upr_prs_reg`` tr(P_k) - ``lwr_prs_reg`` log|P_k| summed over the components' latent precisions
    P_k = C_k C_k^T, given by their Cholesky factors ``chol_prec`` (K, L, L) (eigenvalues pulled toward
    lwr/upr), ``l2_reg`` ||theta||^2 and ``ent_reg`` (-H(pi)) (pushes the weights toward uniform).
    """
    trace = jnp.sum(chol_prec * chol_prec)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_prec, axis1=1, axis2=2)))
    l2 = sum(jnp.sum(v * v) for v in jax.tree_util.tree_leaves(theta))
    log_w = jax.nn.log_softmax(theta["logits"])
    neg_entropy = jnp.sum(jnp.exp(log_w) * log_w)
    return cfg.upr_prs_reg * trace - cfg.lwr_prs_reg * logdet + cfg.l2_reg * l2 + cfg.ent_reg * neg_entropy


Bound = Callable[[ComponentStatistics, TrainerSettings], ComponentStatistics]
Loss = Callable[[dict, ComponentStatistics, TrainerSettings], jax.Array]


@partial(jax.jit, static_argnames=("bound", "loss", "batch_steps"))
def inner_steps(
    theta: dict, opt: Any, stats: ComponentStatistics, cfg: TrainerSettings, *, bound: Bound, loss: Loss,
    batch_steps: int,
) -> tuple[dict, Any]:  # fmt: skip
    """``batch_steps`` clipped AdamW steps on ``loss`` for the ``bound``-ed statistics (one epoch's M-part)."""
    bounded = bound(stats, cfg)
    grad_fn = jax.grad(loss)

    def step(carry, _):
        theta, opt = carry
        grads = clip_by_global_norm(grad_fn(theta, bounded, cfg), cfg.grad_clip)
        theta, opt = adam_update(theta, grads, opt, cfg.learning_rate, weight_decay=cfg.weight_decay)
        return (theta, opt), None

    (theta, opt), _ = jax.lax.scan(step, (theta, opt), None, length=batch_steps)
    return theta, opt


def train(
    theta: dict,
    X: jax.Array,
    e_step: Callable[[dict, jax.Array, TrainerSettings], tuple[ComponentStatistics, jax.Array]],
    bound: Bound,
    loss: Loss,
    cfg: TrainerSettings,
    batch_steps: int,
    n_epochs: int,
) -> tuple[dict, jax.Array]:
    """``n_epochs`` of (full-batch ``e_step``, bounded statistics, ``batch_steps`` AdamW steps).

    The optimiser state persists across epochs, as in the reference. Returns the final natural parameters
    and the mean log-likelihood at the start of every epoch.
    """
    opt = adam_init(theta)
    history = []
    for _ in range(n_epochs):
        stats, loglik = e_step(theta, X, cfg)
        theta, opt = inner_steps(theta, opt, stats, cfg, bound=bound, loss=loss, batch_steps=batch_steps)
        history.append(loglik)
    return theta, jnp.asarray(history, dtype=X.dtype)
