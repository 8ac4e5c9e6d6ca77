"""Baudry et al. (2010) entropy merge (mclust ``clustCombi``): combine the pair whose union most reduces
the classification entropy -sum_n sum_k t_nk log t_nk of the responsibilities.

It looks only at the responsibilities, so it merges components that *overlap* (share points), whatever
their distance; merging i and j lowers the entropy by sum_n [ (t_i+t_j) log(t_i+t_j) - t_i log t_i - t_j log t_j ].
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from reprolab.mergers.components._greedy import ResponsibilityGreedyMerger


def _xlogx(x: NDArray) -> NDArray:
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def entropy_decrease_row(t: NDArray, i: int) -> NDArray[np.float64]:
    """Entropy decrease of merging column i with every column of ``t`` (N, G)."""
    ti = t[:, i : i + 1]
    return (_xlogx(ti + t) - _xlogx(ti) - _xlogx(t)).sum(axis=0)


class EntropyMerger(ResponsibilityGreedyMerger):
    """Greedy Baudry entropy criterion down to ``n_groups``."""

    def _row(self, t: NDArray, i: int) -> NDArray[np.float64]:
        return entropy_decrease_row(t, i)
