"""Clustering diagnostics: NMI, purity, majority accuracy, mixture entropy, hard fraction, merge boost, R², recon.

Everything is plain numpy so that the metrics can be checked against scikit-learn and used on the output of
any model. NMI is the *arithmetic* normalisation (scikit-learn's default), the one the lab notes report; a
raw NMI over K=200 clusters and a merged NMI over 10 groups are different quantities, so the experiments
report both rather than only their difference.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from reprolab.validation import is_real


def _labels(name: str, values: ArrayLike) -> NDArray[np.int64]:
    """Validate a 1-D array of integer labels; floats are accepted only when they are whole numbers."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer labels, got non-integer floats")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _pair(labels_true: ArrayLike, labels_pred: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    t = _labels("labels_true", labels_true)
    p = _labels("labels_pred", labels_pred)
    if t.shape != p.shape:
        raise ValueError(f"labels_true and labels_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    return t, p


def _dense(values: NDArray[np.int64]) -> tuple[NDArray[np.int64], int]:
    """Labels re-coded 0..m-1 in sorted order of value, and m.

    Small non-negative ranges (the usual case: cluster ids) are re-coded by a presence table in O(N); only
    sparse or huge label values pay for np.unique's sort.
    """
    lo, hi = int(values.min()), int(values.max())
    if hi - lo <= 4 * values.size + 1024:
        shifted = values - lo
        present = np.bincount(shifted, minlength=hi - lo + 1) > 0
        lookup = np.cumsum(present) - 1
        return lookup[shifted], int(present.sum())
    _, inverse = np.unique(values, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), int(inverse.max()) + 1


def _cells(labels_true: ArrayLike, labels_pred: ArrayLike):
    """Non-zero contingency cells (row index, column index, count) and the table's shape.

    One bincount over the combined code row * n_cols + col: no sort and no (rows x cols) table unless it
    is small, so NMI on a million labels costs a few linear passes.
    """
    t, p = _pair(labels_true, labels_pred)
    ti, n_t = _dense(t)
    pi, n_p = _dense(p)
    code = ti * n_p + pi
    if n_t * n_p <= 4 * code.size + 1_000_000:
        counts = np.bincount(code, minlength=n_t * n_p)
        where = np.flatnonzero(counts)
        counts = counts[where]
    else:
        where, counts = np.unique(code, return_counts=True)
    return where // n_p, where % n_p, counts, (n_t, n_p)


def contingency(labels_true: ArrayLike, labels_pred: ArrayLike) -> NDArray[np.int64]:
    """Counts table (classes x clusters) over the label values that occur, in sorted order."""
    rows, cols, counts, shape = _cells(labels_true, labels_pred)
    table = np.zeros(shape, dtype=np.int64)
    table[rows, cols] = counts
    return table


def _entropy_of_counts(counts: NDArray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Normalised mutual information with the arithmetic mean of the entropies (= scikit-learn's default).

    Two trivial labelings (one cluster each) have NMI 1 by convention, as in scikit-learn.
    """
    rows, cols, counts, (n_t, n_p) = _cells(labels_true, labels_pred)
    a = np.bincount(rows, weights=counts, minlength=n_t)
    b = np.bincount(cols, weights=counts, minlength=n_p)
    h_true = _entropy_of_counts(a)
    h_pred = _entropy_of_counts(b)
    if h_true == 0.0 and h_pred == 0.0:
        return 1.0
    n = float(counts.sum())
    c = counts.astype(np.float64)
    mi = float((c / n * (np.log(c) + np.log(n) - np.log(a[rows]) - np.log(b[cols]))).sum())
    denom = 0.5 * (h_true + h_pred)
    return float(np.clip(mi / denom, 0.0, 1.0)) if denom > 0 else 0.0


def purity(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Fraction of points whose cluster's majority class is their class (grows with the number of clusters)."""
    table = contingency(labels_true, labels_pred)
    return float(table.max(axis=0).sum() / table.sum())


def majority_mapping(labels_true: ArrayLike, labels_pred: ArrayLike) -> dict[int, int]:
    """Map each cluster to its majority class (ties to the smallest class label)."""
    t, p = _pair(labels_true, labels_pred)
    table = contingency(t, p)
    classes = np.unique(t)
    return {int(c): int(classes[j]) for c, j in zip(np.unique(p), table.argmax(axis=0), strict=True)}


def majority_accuracy(
    train_true: ArrayLike, train_pred: ArrayLike, test_true: ArrayLike, test_pred: ArrayLike
) -> float:
    """Accuracy on the test split of the cluster -> majority-class map learned on the train split.

    A test point whose cluster never occurs in the train split counts as an error (it has no class).
    """
    mapping = majority_mapping(train_true, train_pred)
    t, p = _pair(test_true, test_pred)
    predicted = np.array([mapping.get(int(c), -1) for c in p])
    return float(np.mean(predicted == t))


def mixture_entropy(weights: ArrayLike) -> float:
    """Entropy -sum pi log pi (nats) of mixture weights; low means mass concentrated in few components."""
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"weights must be a 1-D array of numbers, got {weights!r:.60}") from None
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D array, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    total = w.sum()
    if not np.isclose(total, 1.0, atol=1e-4):
        raise ValueError(f"weights must sum to 1, got {total:.6g}")
    return _entropy_of_counts(w)


def hard_fraction(resp: ArrayLike, threshold: float = 0.99) -> float:
    """Share of rows whose largest responsibility exceeds ``threshold`` (near-hard assignments).

    Co-assignment merging reads the overlap of responsibilities (C = R^T R); when nearly every point belongs to
    one component with probability > 0.99, C is almost diagonal and the merge has nothing to work on.
    """
    r = np.asarray(resp, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] == 0 or r.shape[1] == 0:
        raise ValueError(f"resp must be a non-empty (N, K) array, got shape {r.shape}")
    if not np.all(np.isfinite(r)) or r.min() < 0:
        raise ValueError("resp must hold finite non-negative responsibilities")
    if not is_real(threshold) or not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a number in (0, 1), got {threshold!r}")
    return float(np.mean(r.max(axis=1) > threshold))


def merge_boost(labels_true: ArrayLike, raw_labels: ArrayLike, merged_labels: ArrayLike) -> float:
    """NMI after merging minus NMI of the raw over-clustering, on the same points (the notes' "boost")."""
    return nmi(labels_true, merged_labels) - nmi(labels_true, raw_labels)


def _matrices(x: ArrayLike, x_hat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(x_hat, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"x must be a 2-D array (samples x features), got shape {a.shape}")
    if a.shape != b.shape:
        raise ValueError(f"x and x_hat differ in shape: {a.shape} vs {b.shape}")
    if a.shape[0] < 2:
        raise ValueError("x needs at least 2 samples")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("x and x_hat must be finite")
    return a, b


def r_squared(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Pooled coefficient of determination 1 - SS_res / SS_tot, SS_tot about the per-feature means."""
    a, b = _matrices(x, x_hat)
    ss_tot = float(((a - a.mean(axis=0)) ** 2).sum())
    if ss_tot == 0.0:
        raise ValueError("x has zero variance; R² is undefined")
    return 1.0 - float(((a - b) ** 2).sum()) / ss_tot


def reconstruction_error(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Mean over samples of the squared Euclidean reconstruction error (sum over features)."""
    a, b = _matrices(x, x_hat)
    return float(((a - b) ** 2).sum(axis=1).mean())
