"""scikit-learn's 8x8 digits (1,797 x 64, 10 classes): the small real stand-in for MNIST in fast claims."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray


class Split(NamedTuple):
    """Train/test arrays; features scaled to [0, 1], labels int64."""

    X_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    X_test: NDArray[np.float32]
    y_test: NDArray[np.int64]


def load_digits_split(test_fraction: float = 0.2, split_seed: int = 0) -> Split:
    """Digits pixels / 16, split at random by ``split_seed`` (fixed by default, so that seeds vary models only)."""
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(split_seed).permutation(X.shape[0])
    n_test = round(test_fraction * X.shape[0])
    test, train = order[:n_test], order[n_test:]
    X = (X / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    return Split(X[train], y[train], X[test], y[test])
