"""Symmetric-KL merge (goal-apps): average linkage on KL(p||q) + KL(q||p) between component Gaussians.

For HMoG the Gaussians are the latent components N(m_k, S_k) (``HierarchicalMixture.latent_gaussians``);
for MFA/GMM the observable components. Unlike co-assignment it ignores the data, only the geometry.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from reprolab.mergers.components._base import ComponentMerger
from reprolab.mergers.components._linkage import average_linkage_groups


def check_gaussians(means: ArrayLike, covs: ArrayLike) -> tuple[NDArray, NDArray]:
    """(K, D) means and (K, D, D) symmetric positive-definite covariances."""
    m = np.asarray(means, dtype=np.float64)
    c = np.asarray(covs, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"means must be 2-D (components x dims), got shape {m.shape}")
    if c.shape != (m.shape[0], m.shape[1], m.shape[1]):
        raise ValueError(f"covs must have shape {(m.shape[0], m.shape[1], m.shape[1])}, got {c.shape}")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(c))):
        raise ValueError("means and covs must be finite")
    try:
        np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        raise ValueError("covs must be positive definite") from None
    return m, c


def symmetric_kl(means: NDArray, covs: NDArray) -> NDArray[np.float64]:
    """(K, K) matrix of KL(i||j) + KL(j||i); the log-determinants cancel in the symmetric sum."""
    d = means.shape[1]
    prec = np.linalg.inv(covs)
    trace = np.einsum("jab,iba->ij", prec, covs)  # tr(S_j^-1 S_i)
    diff = means[:, None, :] - means[None, :, :]
    maha = np.einsum("ija,jab,ijb->ij", diff, prec, diff)  # (m_i - m_j)^T S_j^-1 (m_i - m_j)
    kl = 0.5 * (trace + maha - d)
    return kl + kl.T


class SymmetricKLMerger(ComponentMerger):
    """Average linkage on the symmetric KL between the given component Gaussians."""

    def __init__(self, means: ArrayLike, covs: ArrayLike) -> None:
        self.means, self.covs = check_gaussians(means, covs)

    def _fit_mapping(self, resp: NDArray, n_groups: int) -> NDArray[np.int64]:
        if resp.shape[1] != self.means.shape[0]:
            raise ValueError(
                f"resp has {resp.shape[1]} components but {self.means.shape[0]} Gaussians were given"
            )
        return average_linkage_groups(symmetric_kl(self.means, self.covs), n_groups)
