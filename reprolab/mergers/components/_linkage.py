"""Average-linkage (UPGMA) cut of a component dissimilarity matrix, shared by the linkage-based mergers."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform


def average_linkage_groups(dist: NDArray, n_groups: int) -> NDArray[np.int64]:
    """Cut the UPGMA tree of ``dist`` (K, K) into at most ``n_groups`` groups (maxclust); labels 0..G-1.

    The matrix is made a valid dissimilarity first: shifted up if it has negative entries, symmetrised,
    diagonal zeroed (the co-assignment recipe; harmless for the others).
    """
    d = np.asarray(dist, dtype=np.float64)
    k = d.shape[0]
    if k == 1:
        return np.zeros(1, dtype=np.int64)
    if k <= n_groups:
        return np.arange(k, dtype=np.int64)
    if d.min() < 0:
        d = d - d.min()
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    tree = linkage(squareform(d, checks=False), method="average")
    labels = fcluster(tree, t=n_groups, criterion="maxclust")
    _, dense = np.unique(labels, return_inverse=True)
    return dense.astype(np.int64)
