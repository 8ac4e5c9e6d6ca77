"""Compatibility between models: task-vector cosine (parameter space) and linear CKA (representation space)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from reprolab.mergers.weights.task_vectors import check_compatible


def _flat(tv: Mapping[str, torch.Tensor] | torch.Tensor, keys: Sequence[str] | None) -> torch.Tensor:
    if isinstance(tv, torch.Tensor):
        return tv.reshape(-1).to(torch.float64)
    keys = sorted(tv) if keys is None else keys
    return torch.cat([tv[k].reshape(-1).to(torch.float64) for k in keys])


def tv_cosine_matrix(task_vectors: Sequence[Mapping[str, torch.Tensor] | torch.Tensor]) -> np.ndarray:
    """Pairwise cosine of flattened task vectors; a zero vector has cosine 0 with everything."""
    if not task_vectors:
        raise ValueError("need at least one task vector")
    flat_tensors = isinstance(task_vectors[0], torch.Tensor)
    for i, t in enumerate(task_vectors):
        if isinstance(t, torch.Tensor) != flat_tensors or not isinstance(t, torch.Tensor | Mapping):
            raise TypeError(f"task_vectors[{i}] is a {type(t).__name__}; give all tensors or all tensor mappings")
    if flat_tensors:
        for i, t in enumerate(task_vectors[1:], 1):
            if t.numel() != task_vectors[0].numel():
                raise ValueError(f"task_vectors[{i}] has {t.numel()} elements, task_vectors[0] {task_vectors[0].numel()}")
    elif len(task_vectors) > 1:
        names = [f"task_vectors[{i}]" for i in range(1, len(task_vectors))]
        check_compatible(task_vectors[0], task_vectors[1:], names, base_name="task_vectors[0]")
    keys = None if flat_tensors else sorted(task_vectors[0])
    flats = torch.stack([_flat(t, keys) for t in task_vectors])
    if not torch.isfinite(flats).all():
        raise ValueError("task vectors contain non-finite values")
    norms = flats.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, flats / norms.clamp_min(1e-300), torch.zeros_like(flats))
    return (unit @ unit.T).numpy()


def linear_cka(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Linear CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred X [n, p], Y [n, q]."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs 2-D arrays with the same number of rows, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("CKA inputs contain non-finite values")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    if den == 0:
        raise ValueError("CKA undefined for a constant representation")
    return float(np.linalg.norm(y.T @ x) ** 2 / den)


def cka_matrix(features: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
    n = len(features)
    m = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            m[i, j] = m[j, i] = linear_cka(features[i], features[j])
    return m


def compatibility_weights(similarity_weights: Sequence[float], compat: np.ndarray) -> list[float]:
    """MergingUriel's similarity x compatibility: w_i ∝ s_i * mean_{j != i} C_ij (negatives clipped to 0).

    ``compat`` is the K x K compatibility among the selected sources. Falls back to the similarity weights
    when every product is zero (K = 1, or all sources mutually incompatible).
    """
    s = np.asarray(similarity_weights, dtype=np.float64)
    c = np.asarray(compat, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"similarity_weights must be a non-empty 1-D sequence, got shape {s.shape}")
    if not np.isfinite(s).all() or (s < 0).any() or s.sum() <= 0:
        raise ValueError(f"similarity_weights must be finite, non-negative and not all 0, got {s.tolist()}")
    k = len(s)
    if c.shape != (k, k):
        raise ValueError(f"compatibility matrix must be {k}x{k}, got {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("compatibility matrix contains non-finite values")
    if k == 1:
        return [1.0]
    mean_other = (c.sum(axis=1) - np.diag(c)) / (k - 1)
    w = s * np.clip(mean_other, 0.0, None)
    if w.sum() <= 0:
        w = s
    return list(w / w.sum())
