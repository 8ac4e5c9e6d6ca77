"""Greedy agglomeration shared by the criterion-based mergers (Baudry entropy, Hennig DEMP / Bhattacharyya).

Each step merges the pair of current groups with the largest criterion, then recomputes only the merged
group's row: O(K) rows of cost O(N K) instead of K full matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from reprolab.mergers.components._base import ComponentMerger


class GreedyMerger(ComponentMerger):
    """Subclasses define the group state, how two groups merge, and the criterion row of one group."""

    def _init_state(self, resp: NDArray) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _merge_state(self, state: Any, i: int, j: int) -> Any:  # pragma: no cover - abstract
        """State after merging group j into group i (j is removed, later groups shift down by one)."""
        raise NotImplementedError

    def _row(self, state: Any, i: int) -> NDArray[np.float64]:  # pragma: no cover - abstract
        """Symmetric criterion between group i and every group (larger = merge first)."""
        raise NotImplementedError

    def _fit_mapping(self, resp: NDArray, n_groups: int) -> NDArray[np.int64]:
        state = self._init_state(resp)
        k = resp.shape[1]
        assign = np.arange(k)
        scores = np.stack([self._row(state, i) for i in range(k)])
        np.fill_diagonal(scores, -np.inf)
        size = k
        while size > n_groups:
            i, j = np.unravel_index(np.argmax(scores), scores.shape)
            i, j = int(min(i, j)), int(max(i, j))
            state = self._merge_state(state, i, j)
            assign[assign == j] = i
            assign[assign > j] -= 1
            scores = np.delete(np.delete(scores, j, axis=0), j, axis=1)
            size -= 1
            scores[i, :] = scores[:, i] = self._row(state, i)
            scores[i, i] = -np.inf
        return assign.astype(np.int64)


class ResponsibilityGreedyMerger(GreedyMerger):
    """A greedy merger whose group state is the (N, G) matrix of summed responsibilities (entropy, DEMP)."""

    def _init_state(self, resp: NDArray) -> NDArray:
        return resp.copy()

    def _merge_state(self, t: NDArray, i: int, j: int) -> NDArray:
        t = t.copy()
        t[:, i] += t[:, j]
        return np.delete(t, j, axis=1)
