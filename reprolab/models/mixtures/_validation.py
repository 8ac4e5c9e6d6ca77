"""Input validation shared by the mixture estimators (one place, so every model fails the same way)."""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from reprolab.validation import check_choice, check_float, check_int

__all__ = ["check_choice", "check_data", "check_float", "check_int", "check_random_state"]


def check_data(X: ArrayLike, *, name: str = "X", n_features: int | None = None) -> NDArray[np.float32]:
    """Return ``X`` as a finite float32 (samples x features) array or raise naming ``name``."""
    if isinstance(X, str | bytes) or X is None:
        raise TypeError(f"{name} must be a 2-D numeric array, got {type(X).__name__}")
    arr = np.asarray(X)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples x features), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features but the model was fitted with {n_features}")
    return arr.astype(np.float32)


def check_random_state(random_state: Any) -> int:
    """Estimators take an int seed (or None for 0) so that numpy Generators and JAX keys derive from it."""
    if random_state is None:
        return 0
    if isinstance(random_state, bool) or not isinstance(random_state, Integral) or random_state < 0:
        raise TypeError(f"random_state must be a non-negative int or None, got {random_state!r}")
    return int(random_state)
