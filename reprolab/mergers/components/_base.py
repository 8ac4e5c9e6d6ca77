"""The one interface every component merger follows, and the input checks they share.

A merger turns K mixture components into ``n_groups`` groups: ``fit(resp, n_groups)`` learns the map
component -> group (``mapping_``, -1 for a dropped component) from responsibilities on the train split;
``predict(resp)`` labels points (train or test) by the group with the largest summed responsibility. The
map is learned once and applied unchanged to test data, as the notes' evaluation does.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def check_responsibilities(
    resp: ArrayLike, *, name: str = "resp", keep_float32: bool = False
) -> NDArray[np.floating]:
    """(N, K) non-negative finite matrix whose rows sum to 1 (within float32 rounding), as float64.

    ``keep_float32`` leaves float32 input as it is (no 8-byte copy of a large N x K matrix) for mergers
    whose only heavy step is a BLAS product.
    """
    if isinstance(resp, str | bytes) or resp is None:
        raise TypeError(f"{name} must be a 2-D array of responsibilities, got {type(resp).__name__}")
    arr = np.asarray(resp)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if not (keep_float32 and arr.dtype == np.float32):
        arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty 2-D (samples x components) array, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    sums = arr.sum(axis=1, dtype=np.float64)
    if np.any(np.abs(sums - 1.0) > 1e-3):
        worst = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(
            f"{name} rows must sum to 1 (responsibilities p(k | x)); row {worst} sums to {sums[worst]:.6g}"
        )
    return arr


def check_n_groups(n_groups: object) -> int:
    if isinstance(n_groups, bool) or not isinstance(n_groups, int | np.integer):
        raise TypeError(f"n_groups must be an int, got {type(n_groups).__name__}")
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    return int(n_groups)


def group_responsibilities(resp: NDArray, mapping: NDArray[np.int64], n_groups: int) -> NDArray[np.float64]:
    """(N, G) summed responsibilities per group; dropped components (mapping -1) contribute nothing."""
    kept = mapping >= 0
    one_hot = np.zeros((mapping.shape[0], n_groups), dtype=resp.dtype)
    one_hot[np.flatnonzero(kept), mapping[kept]] = 1.0
    return resp @ one_hot


class ComponentMerger:
    """Base class: subclasses implement ``_fit_mapping(resp, n_groups) -> mapping (K,)``."""

    _keep_float32 = False  # True where the merger's work is one BLAS product (see check_responsibilities)

    def _fit_mapping(self, resp: NDArray[np.float64], n_groups: int) -> NDArray[np.int64]:  # pragma: no cover
        raise NotImplementedError

    def fit(self, resp: ArrayLike, n_groups: int) -> ComponentMerger:
        """Learn the component -> group map from train responsibilities ``resp`` (N, K)."""
        r = check_responsibilities(resp, keep_float32=self._keep_float32)
        n_groups = check_n_groups(n_groups)
        mapping = np.asarray(self._fit_mapping(r, n_groups), dtype=np.int64)
        self.n_components_ = r.shape[1]
        self.n_groups_ = int(mapping.max()) + 1 if np.any(mapping >= 0) else 0
        self.mapping_ = mapping
        return self

    def predict(self, resp: ArrayLike) -> NDArray[np.int64]:
        """Group label per point: argmax over groups of the summed responsibilities."""
        if not hasattr(self, "mapping_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit(resp, n_groups) first")
        r = check_responsibilities(resp, keep_float32=True)
        self._check_components(r)
        return group_responsibilities(r, self.mapping_, self.n_groups_).argmax(axis=1).astype(np.int64)

    def _check_components(self, r: NDArray) -> None:
        if r.shape[1] != self.n_components_:
            raise ValueError(
                f"resp has {r.shape[1]} components but the merger was fitted with {self.n_components_}"
            )

    def fit_predict(self, resp: ArrayLike, n_groups: int) -> NDArray[np.int64]:
        return self.fit(resp, n_groups).predict(resp)
