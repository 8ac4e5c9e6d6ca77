"""Source selection for cross-lingual merging (MergingUriel's pipeline, made explicit).

Similarity matrices are indexed ``S[target, source]``. Feature ("URIEL") similarity maps cosine to
(cos + 1) / 2 and zeroes the diagonal; "REAL" similarity is the NxN zero-shot accuracy matrix transposed (how
well each source's model does on the target). The pipeline: keep the top-k entries per row, Sinkhorn-normalise,
take the target's row, keep the top ``num_languages`` sources, renormalise to sum 1. ExcTar never selects the
target; IncTar always includes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reprolab.validation import check_int, is_integer


def _as_matrix(s: object, what: str, *, square: bool = False) -> np.ndarray:
    """``s`` as a finite 2-D float64 array (square if asked), or one line naming ``what``."""
    m = np.asarray(s, dtype=np.float64)
    if m.ndim != 2 or (square and m.shape[0] != m.shape[1]):
        raise ValueError(f"{what} must be {'square' if square else '2-D'}, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{what} contains non-finite values")
    return m


def feature_similarity(features: np.ndarray) -> np.ndarray:
    """(cos + 1) / 2 between feature rows, diagonal zeroed; a zero row gets similarity 0.5 to everyone."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be 2-D [n_locales, n_features], got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain non-finite values")
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    unit = np.divide(f, norms, out=np.zeros_like(f), where=norms > 0)
    s = (unit @ unit.T + 1.0) / 2.0
    np.fill_diagonal(s, 0.0)
    return s


def accuracy_similarity(nxn: np.ndarray, *, zero_diagonal: bool = True) -> np.ndarray:
    """REAL similarity S[target, source] = accuracy of the source's model on the target (nxn is [source, target])."""
    s = _as_matrix(nxn, "the NxN matrix", square=True).T.copy()
    if zero_diagonal:
        np.fill_diagonal(s, 0.0)
    return s


def top_k_per_row(s: np.ndarray, k: int) -> np.ndarray:
    check_int("top_k_per_row: k", k, minimum=1)
    _as_matrix(s, "top_k_per_row's similarity matrix")
    s = np.asarray(s)  # checked above; the output keeps the input's dtype
    out = np.zeros_like(s)
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    rows = np.arange(s.shape[0])[:, None]
    out[rows, idx] = s[rows, idx]
    return out


def sinkhorn(s: np.ndarray, iterations: int = 20, eps: float = 1e-9) -> np.ndarray:
    """Alternate row and column normalisation (towards a doubly stochastic matrix)."""
    if iterations < 0:
        raise ValueError("sinkhorn iterations must be >= 0")
    m = _as_matrix(s, "sinkhorn's matrix").copy()
    if (m < 0).any():
        raise ValueError("sinkhorn needs a non-negative matrix")
    for _ in range(iterations):
        m /= m.sum(axis=1, keepdims=True) + eps
        m /= m.sum(axis=0, keepdims=True) + eps
    return m


@dataclass(frozen=True)
class Selection:
    sources: list[int]
    weights: list[float]


def select_sources(
    s: np.ndarray,
    target: int,
    num_languages: int,
    *,
    include_target: bool = False,
    top_k: int | None = 20,
    use_sinkhorn: bool = True,
    sinkhorn_iterations: int = 20,
    eps: float = 1e-9,
) -> Selection:
    """Pick ``num_languages`` sources for ``target`` and their weights (summing to 1)."""
    m = _as_matrix(s, "the similarity matrix s", square=True).copy()
    n = m.shape[0]
    if not is_integer(target) or not 0 <= target < n:
        raise ValueError(f"target index {target} out of range for {n} locales")
    if num_languages < 1 or num_languages > n - (0 if include_target else 1):
        raise ValueError(f"num_languages={num_languages} impossible with {n} locales")
    np.fill_diagonal(m, 0.0)
    if top_k is not None:
        m = top_k_per_row(m, min(top_k, n))
    if use_sinkhorn:
        m = sinkhorn(m, sinkhorn_iterations, eps)
    row = m[target].copy()
    row[target] = -np.inf
    n_others = num_languages - 1 if include_target else num_languages
    order = [int(i) for i in np.argsort(-row, kind="stable")[:n_others]]
    w = [max(float(row[i]), 0.0) for i in order]
    if include_target:
        order = [target, *order]
        w = [max(w, default=1.0) or 1.0, *w]
    total = sum(w)
    w = [x / total for x in w] if total > 0 else [1.0 / len(order)] * len(order)
    return Selection(order, w)
