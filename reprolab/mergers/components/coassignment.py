"""Co-assignment merge (the goal-apps analysis the notes evaluate), exactly as DESIGN section 4 states.

Components that win (argmax) at least max(1, floor(0.0005 N)) train points are kept. Their co-assignment
matrix C = R^T R is cosine-normalised, S_ij = C_ij / sqrt(C_ii C_jj), and D = 1 - S is cut by average
linkage into ``n_groups``. Two components are merged when the same points share their responsibility,
which is why the method needs components of one class to overlap (note 000, Finding 5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import NDArray

from reprolab.mergers.components._base import ComponentMerger
from reprolab.mergers.components._linkage import average_linkage_groups
from reprolab.validation import is_real


def kept_components(resp: NDArray, min_fraction: float = 0.0005) -> NDArray[np.bool_]:
    """Components whose argmax count reaches max(1, floor(min_fraction * N))."""
    counts = np.bincount(resp.argmax(axis=1), minlength=resp.shape[1])
    return counts >= max(1, int(np.floor(min_fraction * resp.shape[0])))


@jax.jit
def _gram(resp: jax.Array) -> jax.Array:
    return resp.T @ resp


def coassignment_similarity(resp: NDArray) -> NDArray[np.float64]:
    """S = C / sqrt(diag C diag C^T) with C = R^T R (K, K).

    The N x K x K product is the only heavy step: it runs as one float32 XLA matmul (about 0.07 s at
    N = 70,000, K = 200 here, against ~1.6 s for numpy's float64 ``resp.T @ resp`` on this machine's
    OpenBLAS); the K x K result is normalised in float64.
    """
    c = np.asarray(_gram(jnp.asarray(resp, dtype=jnp.float32)), dtype=np.float64)
    diag = np.sqrt(np.maximum(np.diag(c), 1e-300))
    return c / np.outer(diag, diag)


class CoAssignmentMerger(ComponentMerger):
    """Merge by average linkage on 1 - cosine co-assignment; ``min_fraction`` sets the keep threshold.

    If no more components survive the keep filter than ``n_groups``, every survivor is its own group (the
    mapping then has fewer than ``n_groups`` groups; ``n_groups_`` says how many).
    """

    _keep_float32 = True

    def __init__(self, min_fraction: float = 0.0005) -> None:
        if not is_real(min_fraction):
            raise TypeError(f"min_fraction must be a number, got {min_fraction!r}")
        if not 0.0 <= min_fraction < 1.0:
            raise ValueError(f"min_fraction must be in [0, 1), got {min_fraction}")
        self.min_fraction = min_fraction

    def _fit_mapping(self, resp: NDArray, n_groups: int) -> NDArray[np.int64]:
        keep = kept_components(resp, self.min_fraction)
        if not keep.any():
            need = max(1, int(np.floor(self.min_fraction * resp.shape[0])))
            raise ValueError(
                f"min_fraction={self.min_fraction}: no component wins the {need} of {resp.shape[0]} points "
                "it needs to be kept; lower min_fraction"
            )
        mapping = np.full(resp.shape[1], -1, dtype=np.int64)
        dist = 1.0 - coassignment_similarity(resp if keep.all() else resp[:, keep])
        mapping[keep] = average_linkage_groups(dist, n_groups)
        return mapping
