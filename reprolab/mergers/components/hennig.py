"""Hennig (2010) merging of normal components (R fpc ``mergenormals``): DEMP and the Bhattacharyya bound.

- DEMP ("directly estimated misclassification probability"): for groups i, j the share of i's
  responsibility mass on points where j's responsibility is larger, p_ij = sum_n t_ni [t_nj > t_ni] /
  sum_n t_ni; merge the pair with the largest max(p_ij, p_ji). Needs only responsibilities.
- Bhattacharyya: merge the pair of Gaussians with the largest Bhattacharyya coefficient exp(-d_B) (an
  upper bound on the Bayes overlap); a merged group is replaced by the moment-matched Gaussian of its
  weighted mixture, as ``mergenormals`` does. Needs component Gaussians.
- Ridgeline ratio: for two Gaussians the ridgeline x*(a) = [(1-a) S_i^-1 + a S_j^-1]^-1 [(1-a) S_i^-1 m_i +
  a S_j^-1 m_j], a in [0, 1], holds every mode of their two-component mixture (Ray & Lindsay 2005). Along it
  the criterion is r = (lowest mixture density between the outermost modes) / (second-highest mode), 1 when
  the pair's mixture is unimodal; the pair with the largest r merges first (fpc ``ridge.ratio``), merged
  groups again being moment-matched Gaussians. Evaluated on a grid of ``n_grid`` values of a; ties (every
  unimodal pair has r = 1) go to the larger Bhattacharyya coefficient.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from reprolab.mergers.components._greedy import GreedyMerger, ResponsibilityGreedyMerger
from reprolab.mergers.components.kl import check_gaussians


def demp_row(t: NDArray, i: int) -> NDArray[np.float64]:
    """max(p_ij, p_ji) for every j, p_ij being group i's mass on points that j out-weighs."""
    ti = t[:, i : i + 1]
    mass = np.maximum(t.sum(axis=0), 1e-300)
    p_ij = (ti * (t > ti)).sum(axis=0) / mass[i]
    p_ji = (t * (ti > t)).sum(axis=0) / mass
    return np.maximum(p_ij, p_ji)


class DEMPMerger(ResponsibilityGreedyMerger):
    """Greedy DEMP merging down to ``n_groups``."""

    def _row(self, t: NDArray, i: int) -> NDArray[np.float64]:
        return demp_row(t, i)


def bhattacharyya_coefficient(m1: NDArray, c1: NDArray, means: NDArray, covs: NDArray) -> NDArray[np.float64]:
    """exp(-d_B) between N(m1, c1) and each N(means[j], covs[j])."""
    avg = 0.5 * (c1[None] + covs)
    diff = means - m1[None]
    maha = np.einsum("ja,ja->j", diff, np.linalg.solve(avg, diff[..., None])[..., 0])
    _, ld_avg = np.linalg.slogdet(avg)
    _, ld1 = np.linalg.slogdet(c1)
    _, ld2 = np.linalg.slogdet(covs)
    return np.exp(-(maha / 8.0 + 0.5 * (ld_avg - 0.5 * (ld1 + ld2))))


def ridgeline_ratio(
    w1: float, m1: NDArray, c1: NDArray, weights: NDArray, means: NDArray, covs: NDArray, n_grid: int = 101
) -> NDArray[np.float64]:
    """Hennig's ridgeline ratio between N(m1, c1) (weight w1) and each (weights[j], means[j], covs[j])."""
    alpha = np.linspace(0.0, 1.0, n_grid)[None, :, None, None]  # (1, G, 1, 1)
    p1 = np.linalg.inv(c1)
    pj = np.linalg.inv(covs)  # (J, D, D)
    a = (1.0 - alpha) * p1[None, None] + alpha * pj[:, None]  # (J, G, D, D)
    rhs = (1.0 - alpha[..., 0]) * (p1 @ m1)[None, None] + alpha[..., 0] * np.einsum("jab,jb->ja", pj, means)[
        :, None
    ]
    x = np.linalg.solve(a, rhs[..., None])[..., 0]  # ridgeline points (J, G, D)

    def log_density(x: NDArray, mean: NDArray, prec: NDArray) -> NDArray:
        diff = x - mean[..., None, :]
        _, logdet = np.linalg.slogdet(prec)
        quad = np.einsum("...ga,...ab,...gb->...g", diff, prec, diff)
        return 0.5 * (logdet[..., None] - quad - x.shape[-1] * np.log(2.0 * np.pi))

    share = w1 / (w1 + weights)  # the pair's own mixture weights
    f = share[:, None] * np.exp(log_density(x, m1[None], p1[None])) + (1.0 - share[:, None]) * np.exp(
        log_density(x, means, pj)
    )
    ratios = np.ones(f.shape[0])
    for j, row in enumerate(f):
        inner = (row[1:-1] >= row[:-2]) & (row[1:-1] >= row[2:])
        modes = np.flatnonzero(np.concatenate([[row[0] >= row[1]], inner, [row[-1] >= row[-2]]]))
        if modes.size >= 2:
            lo, hi = modes[0], modes[-1]
            second = np.sort(row[modes])[-2]
            ratios[j] = float(row[lo : hi + 1].min() / max(second, 1e-300))
    return ratios


class BhattacharyyaMerger(GreedyMerger):
    """Greedy Bhattacharyya merging of the given component Gaussians, weights from the responsibilities."""

    def __init__(self, means: ArrayLike, covs: ArrayLike) -> None:
        self.means, self.covs = check_gaussians(means, covs)

    def _init_state(self, resp: NDArray) -> tuple[NDArray, NDArray, NDArray]:
        if resp.shape[1] != self.means.shape[0]:
            raise ValueError(
                f"resp has {resp.shape[1]} components but {self.means.shape[0]} Gaussians were given"
            )
        return resp.sum(axis=0) + 1e-12, self.means.copy(), self.covs.copy()

    def _merge_state(self, state, i: int, j: int):
        w, m, c = (a.copy() for a in state)
        wi, wj = w[i], w[j]
        mean = (wi * m[i] + wj * m[j]) / (wi + wj)
        cov = sum(wt * (c[t] + np.outer(m[t] - mean, m[t] - mean)) for t, wt in ((i, wi), (j, wj))) / (
            wi + wj
        )
        w[i], m[i], c[i] = wi + wj, mean, cov
        return np.delete(w, j), np.delete(m, j, axis=0), np.delete(c, j, axis=0)

    def _row(self, state, i: int) -> NDArray[np.float64]:
        _, m, c = state
        return bhattacharyya_coefficient(m[i], c[i], m, c)


class RidgelineMerger(BhattacharyyaMerger):
    """Greedy ridgeline-ratio merging (Hennig 2010) of the given component Gaussians; same moment-matched
    state as :class:`BhattacharyyaMerger`, only the pair criterion differs."""

    def __init__(self, means: ArrayLike, covs: ArrayLike, n_grid: int = 101) -> None:
        super().__init__(means, covs)
        if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 3:
            raise ValueError(f"n_grid must be an int >= 3, got {n_grid!r}")
        self.n_grid = n_grid

    def _row(self, state, i: int) -> NDArray[np.float64]:
        """Ratio, ties broken by the Bhattacharyya coefficient: every unimodal pair has ratio exactly 1, and
        a tie resolved by component order would make the merge depend on how components are numbered."""
        w, m, c = state
        ratio = ridgeline_ratio(float(w[i]), m[i], c[i], w, m, c, self.n_grid)
        return ratio + 1e-6 * bhattacharyya_coefficient(m[i], c[i], m, c)
