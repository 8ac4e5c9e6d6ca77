"""Mixture models in JAX (float32): GMM baseline, MFA, HMoG and its full-interaction variant.

All are scikit-learn-like estimators (``fit`` / ``predict_proba`` / ``predict`` / ``score``,
``random_state``) sharing one factor-analytic Gaussian kernel (``_factor``).
"""

from reprolab.models.mixtures._base import FactorMixtureModel, MixtureModel, NotFittedError
from reprolab.models.mixtures.gmm import GaussianMixture
from reprolab.models.mixtures.hmog import FullInteractionMixture, HierarchicalMixture
from reprolab.models.mixtures.mfa import MixtureOfFactorAnalyzers

__all__ = [
    "FactorMixtureModel",
    "FullInteractionMixture",
    "GaussianMixture",
    "HierarchicalMixture",
    "MixtureModel",
    "MixtureOfFactorAnalyzers",
    "NotFittedError",
]
