"""MFA's half of the reference gradient trainer (goal-apps' MFA ``GradientTrainer``; the core is ``_gradient``).

Exact EM jumps to the M-step optimum every iteration; at K >> classes that drives MFA's responsibilities hard
(each point owned by one component with probability > 0.99), and co-assignment then has nothing to merge.
The reference trains differently: per epoch one full-batch E-step, the statistics bounded (``bound_statistics``,
the reference's ``bound_means``: observable variance floor ``obs_min_var``, weights clipped at ``min_prob``,
every component's latent reset to N(0, I)), then ``batch_steps`` clipped AdamW steps on the natural
parameters of x | z, k ~ N(mu_k + Lambda_k z, Psi_k): eta_k = Psi_k^-1 mu_k, h_k = Psi_k^-1 / 2,
B_k = Psi_k^-1 Lambda_k and the logits. The regularised loss (``loss``) adds the precision-eigenvalue
penalty on each component's harmonium latent precision M_k = I + Lambda_k^T Psi_k^-1 Lambda_k, L2 and
mixture entropy.

A small learning rate in natural coordinates is what keeps the regime soft: a precision can grow by at most
~lr per Adam step, so after ``n_epochs * batch_steps`` steps no variance has collapsed far below its
initial value (the reference initialises every component with the *mean* data variance, isotropic).
Differences from the reference, stated: our latent prior is fixed at N(0, I) (the reference learns it and
pulls it back to N(0, I) through the bounded statistics), and the model statistics are taken under the
posterior latent moments (the expected complete-data log-likelihood) rather than the harmonium's prior.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from reprolab.models.mixtures import _gradient as core
from reprolab.models.mixtures._gradient import ComponentStatistics, TrainerSettings


def bound_statistics(stats: ComponentStatistics, obs_min_var: float, min_prob: float) -> ComponentStatistics:
    """The reference's ``bound_means``: variance floor, clipped and renormalised weights, latents reset to N(0, I)."""
    return core.reset_latents(core.floor_observable(stats, obs_min_var, min_prob))


def bound(stats: ComponentStatistics, cfg: TrainerSettings) -> ComponentStatistics:
    return bound_statistics(stats, cfg.obs_min_var, cfg.min_prob)


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
    psi = 1.0 / jnp.clip(2.0 * theta["half_prec"], 1e-6, 1.0 / obs_min_var)  # psi in [obs_min_var, 1e6]
    return {
        "log_w": jax.nn.log_softmax(theta["logits"]),
        "means": theta["eta"] * psi,
        "loads": theta["B"] * psi[:, :, None],
        "psi": psi,
    }


def expected_nll(theta: dict, stats: ComponentStatistics, obs_min_var: float) -> jax.Array:
    """-E[log p(x, z, k)] per data point under ``stats`` (the N(0, I) latent prior is a constant)."""
    return core.observable_nll(
        theta["logits"], theta["eta"], theta["half_prec"], theta["B"], stats, obs_min_var
    )


def latent_precision(theta: dict, obs_min_var: float) -> jax.Array:
    """M_k = I + B_k^T Psi_k B_k (= I + Lambda^T Psi^-1 Lambda), the harmonium's latent precision (K, L, L)."""
    psi = 1.0 / jnp.clip(2.0 * theta["half_prec"], 1e-6, 1.0 / obs_min_var)
    latent = theta["B"].shape[2]
    return jnp.eye(latent, dtype=psi.dtype) + jnp.einsum("kdl,kd,kdm->klm", theta["B"], psi, theta["B"])


def loss(theta: dict, stats: ComponentStatistics, cfg: TrainerSettings) -> jax.Array:
    """The regularised loss of one inner step."""
    chol = jnp.linalg.cholesky(latent_precision(theta, cfg.obs_min_var))
    return expected_nll(theta, stats, cfg.obs_min_var) + core.penalties(theta, chol, cfg)
