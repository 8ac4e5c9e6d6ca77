"""The estimator skeleton shared by every mixture: fit / predict_proba / predict / score(_samples).

A subclass supplies ``_fit(X, seed) -> params`` and a jitted ``_log_joint(params, X) -> (N, K)`` of
log p(k) + log p(x | k); everything else (validation, responsibilities, likelihood) lives here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike, NDArray

from reprolab.models.mixtures._validation import check_data, check_int, check_random_state


class NotFittedError(RuntimeError):
    """The estimator is used before ``fit``."""


@jax.jit
def _normalise(joint: jax.Array) -> tuple[jax.Array, jax.Array]:
    log_px = jax.nn.logsumexp(joint, axis=1)
    return jnp.exp(joint - log_px[:, None]), log_px


def run_em(
    step: Callable[[Any, jax.Array, float], tuple[Any, jax.Array]],
    params: Any,
    X: jax.Array,
    min_variance: float,
    n_iter: int,
) -> tuple[Any, jax.Array]:
    """``n_iter`` calls of a jitted EM ``step``; a Python loop, so the iteration count never recompiles.

    Returns the final parameters and the per-iteration mean log-likelihood.
    """
    history = []
    for _ in range(n_iter):
        params, loglik = step(params, X, min_variance)
        history.append(loglik)
    return params, jnp.asarray(history, dtype=X.dtype)


class MixtureModel:
    """Base class; subclasses set ``_log_joint_fn`` and implement ``_fit``."""

    _log_joint_fn: Callable[[Any, jax.Array], jax.Array]

    def _fit(self, X: jax.Array, seed: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, X: ArrayLike, y: Any = None) -> MixtureModel:
        """Fit to ``X`` (samples x features); ``y`` is ignored (scikit-learn convention)."""
        data = check_data(X)
        self._validate_params(data)
        seed = check_random_state(self.random_state)
        self.n_features_in_ = data.shape[1]
        self.params_ = self._fit(jnp.asarray(data), seed)
        # numpy, not jnp: an eager jnp check compiles one small kernel per parameter shape
        if not all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree_util.tree_leaves(self.params_)):
            raise FloatingPointError(f"{type(self).__name__}.fit produced non-finite parameters")
        return self

    def _validate_params(self, X: NDArray) -> None:  # pragma: no cover - overridden
        pass

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X) first")

    def _joint(self, X: ArrayLike) -> jax.Array:
        self._check_fitted()
        data = check_data(X, n_features=self.n_features_in_)
        return type(self)._log_joint_fn(self.params_, jnp.asarray(data))

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float32]:
        """Responsibilities p(k | x), shape (N, K); rows sum to 1."""
        resp, _ = _normalise(self._joint(X))
        return np.asarray(resp)

    def predict(self, X: ArrayLike) -> NDArray[np.int64]:
        """Most probable component per sample."""
        return np.asarray(jnp.argmax(self._joint(X), axis=1)).astype(np.int64)

    def score_samples(self, X: ArrayLike) -> NDArray[np.float32]:
        """log p(x) per sample."""
        _, log_px = _normalise(self._joint(X))
        return np.asarray(log_px)

    def score(self, X: ArrayLike, y: Any = None) -> float:
        """Mean log-likelihood per sample."""
        return float(np.mean(self.score_samples(X)))

    @property
    def weights_(self) -> NDArray[np.float32]:
        """Mixture weights p(k)."""
        self._check_fitted()
        return np.asarray(jnp.exp(self.params_["log_w"]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_components={getattr(self, 'n_components', '?')})"


class FactorMixtureModel(MixtureModel):
    """A mixture with latent factors (MFA, HMoG): subclasses also set ``_reconstruct_fn``."""

    latent_dim: int
    _reconstruct_fn: Callable[[Any, jax.Array], jax.Array]
    _summary_fn: Callable[[Any, jax.Array], jax.Array]

    def _check_latent_dim(self, X: NDArray) -> None:
        check_int("latent_dim", self.latent_dim, minimum=1)
        if self.latent_dim >= X.shape[1]:
            raise ValueError(f"latent_dim={self.latent_dim} must be smaller than the {X.shape[1]} features")

    def reconstruct(self, X: ArrayLike) -> NDArray[np.float32]:
        """E[x | posterior latents], averaged over components by responsibility (for R² / recon error)."""
        self._check_fitted()
        data = check_data(X, n_features=self.n_features_in_)
        return np.asarray(type(self)._reconstruct_fn(self.params_, jnp.asarray(data)))

    def summarise(self, X: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float32]]:
        """(responsibilities (N, K), log p(x) (N,), reconstruction (N, D)) from one compiled pass.

        The same numbers as ``predict_proba``, ``score_samples`` and ``reconstruct``; an experiment that needs
        all three on several splits calls this once on the stacked rows, so each shape compiles once.
        """
        self._check_fitted()
        data = check_data(X, n_features=self.n_features_in_)
        out = np.asarray(type(self)._summary_fn(self.params_, jnp.asarray(data)))
        k = self.params_["log_w"].shape[0]
        joint = out[:, :k].astype(np.float64)
        top = joint.max(axis=1, keepdims=True)
        log_px = top[:, 0] + np.log(np.exp(joint - top).sum(axis=1))
        return np.exp(joint - log_px[:, None]).astype(np.float32), log_px, out[:, k:]
