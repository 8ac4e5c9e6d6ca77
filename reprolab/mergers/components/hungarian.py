"""Hungarian "optimal" component -> class map: a *reference*, not a fair merge baseline.

It uses the true labels and maps only ``n_groups`` components (one per class, by maximum-weight matching
of the cluster x class contingency table); points whose winning component is unmatched get label -1. It
bounds what a one-component-per-class reading of the mixture can achieve, nothing more.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment

from reprolab.mergers.components._base import ComponentMerger, check_responsibilities


class HungarianReference(ComponentMerger):
    """Match components to the classes of ``labels`` (aligned with the rows of the ``resp`` given to fit)."""

    def __init__(self, labels: ArrayLike) -> None:
        lab = np.asarray(labels)
        if lab.ndim != 1 or lab.dtype.kind not in "iu":
            raise ValueError(f"labels must be a 1-D integer array, got shape {lab.shape} dtype {lab.dtype}")
        self.labels = lab.astype(np.int64)

    def _fit_mapping(self, resp: NDArray, n_groups: int) -> NDArray[np.int64]:
        if resp.shape[0] != self.labels.shape[0]:
            raise ValueError(f"labels has {self.labels.shape[0]} entries but resp has {resp.shape[0]} rows")
        classes = np.unique(self.labels)
        if n_groups != classes.size:
            raise ValueError(
                f"n_groups={n_groups} must equal the number of classes in labels ({classes.size})"
            )
        winners = resp.argmax(axis=1)
        table = np.zeros((resp.shape[1], classes.size))
        np.add.at(table, (winners, np.searchsorted(classes, self.labels)), 1.0)
        rows, cols = linear_sum_assignment(table, maximize=True)
        mapping = np.full(resp.shape[1], -1, dtype=np.int64)
        mapping[rows] = cols
        return mapping

    def predict(self, resp: ArrayLike) -> NDArray[np.int64]:
        """Group of each point's winning component; -1 when that component is unmatched."""
        if not hasattr(self, "mapping_"):
            raise RuntimeError("HungarianReference is not fitted yet; call fit(resp, n_groups) first")
        r = check_responsibilities(resp)
        self._check_components(r)
        return self.mapping_[r.argmax(axis=1)]
