"""Seed statistics: point summaries, seeded bootstrap CIs, probability of improvement.

Follows rliable's advice for few-seed evaluation: the interquartile mean rather than the mean, percentile
bootstrap intervals over seeds, and probability of improvement for paired comparisons. Every function is
vectorised over bootstrap resamples (axis -1 holds the seeds).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

N_BOOTSTRAP = 10_000
Summary = Callable[[np.ndarray], np.ndarray]


def iqm(values: np.ndarray) -> np.ndarray:
    """Interquartile mean along the last axis: drop floor(25%) of seeds at each end (scipy ``trim_mean(x, .25)``)."""
    n = values.shape[-1]
    cut = int(0.25 * n)
    ordered = np.sort(values, axis=-1)
    return ordered[..., cut : n - cut].mean(axis=-1)


def _std(values: np.ndarray) -> np.ndarray:
    n = values.shape[-1]
    return values.std(axis=-1, ddof=1) if n > 1 else np.zeros(values.shape[:-1])


SUMMARIES: dict[str, Summary] = {
    "mean": lambda v: v.mean(axis=-1),
    "median": lambda v: np.median(v, axis=-1),
    "iqm": iqm,
    "min": lambda v: v.min(axis=-1),
    "max": lambda v: v.max(axis=-1),
    "std": _std,
    # fraction and paired_difference reduce to a mean of per-seed quantities (indicators, differences)
    "fraction": lambda v: v.mean(axis=-1),
    "paired_difference": lambda v: v.mean(axis=-1),
}


def bootstrap_seed(label: str) -> int:
    """A stable RNG seed from a label (the claim id): same values always give the same interval."""
    return int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "little")


def bootstrap_ci(
    values: np.ndarray, summary: Summary, *, label: str, n_resamples: int = N_BOOTSTRAP, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``summary`` over seeds (resampled with replacement).

    With one seed there is nothing to resample: the interval is the point itself.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 1:
        point = float(summary(values))
        return point, point
    rng = np.random.default_rng(bootstrap_seed(label))
    index = rng.integers(0, values.size, size=(n_resamples, values.size))
    resampled = summary(values[index])
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(resampled, [tail, 100.0 - tail])
    return float(low), float(high)


def probability_of_improvement(treatment: np.ndarray, control: np.ndarray) -> float:
    """P(treatment > control) over paired seeds; ties count one half (rliable's definition, paired)."""
    difference = np.asarray(treatment, dtype=float) - np.asarray(control, dtype=float)
    return float(np.mean(difference > 0) + 0.5 * np.mean(difference == 0))
