"""Mixture of factor analysers (Ghahramani & Hinton 1996) trained by exact EM or by the reference's gradient trainer.

Component k: x = mu_k + Lambda_k z + eps, z ~ N(0, I_L), eps ~ N(0, diag psi_k).
- ``trainer="em"``: exact EM. The M-step regresses x on the augmented factor [z; 1] per component, so means
  and loadings are updated jointly. Init: k-means means, within-cluster variances, loadings 0.01 N(0, 1).
- ``trainer="gradient"``: note 000's publication trainer (goal-apps' MFA ``GradientTrainer``, see
  ``_mfa_gradient``): per epoch a full-batch E-step, bounded statistics, ``batch_steps`` clipped AdamW steps
  in natural coordinates. Init as the reference model: k-means means, every component with the *mean* data
  variance (isotropic, floored at ``min_variance``), natural loadings ``init_scale`` N(0, 1), uniform weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import NDArray

from reprolab.models.mixtures import _gradient as core
from reprolab.models.mixtures import _mfa_gradient as grad_trainer
from reprolab.models.mixtures._base import FactorMixtureModel, run_em
from reprolab.models.mixtures._chunk import chunk_rows, chunked_map
from reprolab.models.mixtures._factor import (
    factor_posterior,
    factor_sums,
    log_responsibilities,
    solve_regression,
)
from reprolab.models.mixtures._gradient import ComponentStatistics, TrainerSettings, statistics_from_sums
from reprolab.models.mixtures._init import kmeans_partition, partition_moments
from reprolab.models.mixtures._validation import check_choice, check_float, check_int


def _rows(params: dict, X: jax.Array) -> int:
    """Chunk size: the E-step's largest intermediates are (rows, K, L)."""
    return chunk_rows(X.shape[0], params["loads"].shape[0] * params["loads"].shape[2])


def _joint_rows(params: dict, X: jax.Array) -> jax.Array:
    post = factor_posterior(X, params["means"], params["loads"], params["psi"])
    return params["log_w"][None, :] + post.log_prob


@jax.jit
def _log_joint(params: dict, X: jax.Array) -> jax.Array:
    return chunked_map(lambda x: _joint_rows(params, x), X, _rows(params, X))


def _em_step(params: dict, X: jax.Array, min_variance: float) -> tuple[dict, jax.Array]:
    """One exact EM iteration."""
    stats = factor_sums(params, X)
    nk = stats["nk"]
    lam, psi = solve_regression(stats["g"], stats["h"], stats["sxx"], nk, min_variance)
    latent = params["loads"].shape[2]
    weights = (nk + 1e-6) / (nk.sum() + 1e-6 * nk.shape[0])
    new = {"log_w": jnp.log(weights), "means": lam[:, :, latent], "loads": lam[:, :, :latent], "psi": psi}
    return new, stats["loglik"] / X.shape[0]


_em_step_jit = jax.jit(_em_step)


def _em(params: dict, X: jax.Array, min_variance: float, n_iter: int) -> tuple[dict, jax.Array]:
    return run_em(_em_step_jit, params, X, min_variance, n_iter)


@jax.jit
def _bounded_e_step(theta: dict, X: jax.Array, cfg: TrainerSettings) -> tuple[ComponentStatistics, jax.Array]:
    """Posterior statistics at the current natural parameters, and the mean log-likelihood."""
    sums = factor_sums(grad_trainer.from_natural(theta, cfg.obs_min_var), X)
    stats = statistics_from_sums(sums["nk"], sums["g"], sums["h"], sums["sxx"])
    return stats, sums["loglik"] / X.shape[0]


def _reconstruct_rows(params: dict, X: jax.Array) -> jax.Array:
    post = factor_posterior(X, params["means"], params["loads"], params["psi"])
    log_r, _ = log_responsibilities(params["log_w"], post.log_prob)
    resp = jnp.exp(log_r)
    # sum_k r_nk (mu_k + Lambda_k E[z | x, k]) contracted over (k, l) at once: no N x K x D array
    return resp @ params["means"] + jnp.einsum("knl,kdl->nd", resp.T[:, :, None] * post.mean, params["loads"])


@jax.jit
def _reconstruct(params: dict, X: jax.Array) -> jax.Array:
    return chunked_map(lambda x: _reconstruct_rows(params, x), X, _rows(params, X))


@jax.jit
def _summary(p: dict, X: jax.Array) -> jax.Array:
    """[log p(k) + log p(x | k) | reconstruction] (N, K + D) in one compiled pass (one compilation per shape)."""
    return chunked_map(
        lambda x: jnp.concatenate([_joint_rows(p, x), _reconstruct_rows(p, x)], axis=1), X, _rows(p, X)
    )


class MixtureOfFactorAnalyzers(FactorMixtureModel):
    """MFA with ``n_components`` components of ``latent_dim`` factors each and per-component diagonal noise.

    ``min_variance`` floors the noise variances of exact EM (pixels that are constant within a component
    would otherwise collapse to zero variance and infinite likelihood) and, for ``trainer="gradient"``, the
    initial variance (the reference model's ``min_var``, 0.01 in note 000's MNIST config). ``n_iter`` is the
    number of EM iterations or of gradient epochs. The gradient trainer's settings default to the reference's:
    ``learning_rate`` 2e-5 and ``batch_steps`` 1,000 (note 000's publication config), ``grad_clip`` 1.0,
    ``weight_decay`` 1e-4 (optax.adamw), ``upr_prs_reg`` = ``lwr_prs_reg`` = 1e-3, ``obs_min_var`` 1e-5,
    ``min_prob`` 1e-4, ``init_scale`` 0.01.
    """

    _log_joint_fn = staticmethod(_log_joint)
    _reconstruct_fn = staticmethod(_reconstruct)
    _summary_fn = staticmethod(_summary)

    def __init__(
        self,
        n_components: int = 10,
        latent_dim: int = 5,
        *,
        n_iter: int = 100,
        min_variance: float = 1e-3,
        trainer: str = "em",
        learning_rate: float = 2e-5,
        batch_steps: int = 1000,
        grad_clip: float = 1.0,
        weight_decay: float = 1e-4,
        upr_prs_reg: float = 1e-3,
        lwr_prs_reg: float = 1e-3,
        l2_reg: float = 0.0,
        ent_reg: float = 0.0,
        obs_min_var: float = 1e-5,
        min_prob: float = 1e-4,
        init_scale: float = 0.01,
        random_state: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.latent_dim = latent_dim
        self.n_iter = n_iter
        self.min_variance = min_variance
        self.trainer = trainer
        self.learning_rate = learning_rate
        self.batch_steps = batch_steps
        self.grad_clip = grad_clip
        self.weight_decay = weight_decay
        self.upr_prs_reg = upr_prs_reg
        self.lwr_prs_reg = lwr_prs_reg
        self.l2_reg = l2_reg
        self.ent_reg = ent_reg
        self.obs_min_var = obs_min_var
        self.min_prob = min_prob
        self.init_scale = init_scale
        self.random_state = random_state

    def _validate_params(self, X: NDArray) -> None:
        check_int("n_components", self.n_components, minimum=1)
        self._check_latent_dim(X)
        check_int("n_iter", self.n_iter, minimum=0)
        check_float("min_variance", self.min_variance, minimum=0.0, strict=True)
        check_choice("trainer", self.trainer, ("em", "gradient"))
        if self.trainer == "gradient":
            check_float("learning_rate", self.learning_rate, minimum=0.0, strict=True)
            check_int("batch_steps", self.batch_steps, minimum=1)
            for name in ("grad_clip", "weight_decay", "upr_prs_reg", "lwr_prs_reg", "l2_reg", "ent_reg"):
                check_float(name, getattr(self, name), minimum=0.0)
            check_float("obs_min_var", self.obs_min_var, minimum=0.0, strict=True)
            check_float("min_prob", self.min_prob, minimum=0.0)
            check_float("init_scale", self.init_scale, minimum=0.0)
            if self.min_prob * self.n_components >= 1.0:
                raise ValueError(f"min_prob={self.min_prob} times n_components must be below 1")

    def settings(self) -> TrainerSettings:
        """The gradient trainer's hyperparameters (``batch_steps`` apart)."""
        return TrainerSettings(
            float(self.learning_rate), float(self.grad_clip), float(self.weight_decay), float(self.upr_prs_reg),
            float(self.lwr_prs_reg), float(self.l2_reg), float(self.ent_reg), float(self.obs_min_var),
            float(self.min_prob),
        )  # fmt: skip

    def _reference_init(self, data: NDArray, seed: int) -> dict:
        """goal-apps' MFA init: k-means centres, isotropic mean data variance, small natural loadings, uniform pi."""
        k, latent = self.n_components, self.latent_dim
        centres, _ = kmeans_partition(data, k, seed)
        var = max(float(np.mean(np.var(data.astype(np.float64), axis=0))), self.min_variance)
        psi = np.full((k, data.shape[1]), var, dtype=np.float32)
        nat_loads = self.init_scale * np.random.default_rng(seed).standard_normal((k, data.shape[1], latent))
        return {
            "log_w": jnp.full((k,), -np.log(k), jnp.float32),
            "means": jnp.asarray(centres),
            "loads": jnp.asarray(nat_loads * psi[:, :, None], dtype=jnp.float32),
            "psi": jnp.asarray(psi),
        }

    def _fit(self, X: jax.Array, seed: int) -> dict:
        data = np.asarray(X)
        if self.trainer == "gradient":
            cfg = self.settings()
            theta, history = core.train(
                jax.jit(grad_trainer.to_natural)(self._reference_init(data, seed)), X, _bounded_e_step,
                grad_trainer.bound, grad_trainer.loss, cfg, int(self.batch_steps), self.n_iter,
            )  # fmt: skip
            params = jax.jit(grad_trainer.from_natural)(theta, cfg.obs_min_var)
            self.loglik_history_ = np.asarray(history)
            return params
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
