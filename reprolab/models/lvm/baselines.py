"""Trivial next-embedding predictors every trained model is reported against (DESIGN.md section 4).

On the reference data: random 0.0002, global mean 0.42, copy-last 0.44, mean of context 0.546 (cosine). A
trained model that does not beat mean-of-context has learned nothing the context average did not already give.
"""

from __future__ import annotations

import numpy as np

from reprolab.data.sequences import Windows, as_windows, iter_batches

__all__ = ["BASELINES", "baseline_predictions", "baseline_scores", "mean_cosine", "row_cosines"]

BASELINES = ("random", "global_mean", "copy_last", "mean_of_context")


def row_cosines(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Cosine of each row pair; a zero row raises (its cosine is undefined, never a silent NaN)."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"pred {p.shape} and target {t.shape} must both be (n, d)")
    pn, tn = np.linalg.norm(p, axis=1), np.linalg.norm(t, axis=1)
    for name, norms in (("pred", pn), ("target", tn)):
        if not np.isfinite(norms).all():
            raise ValueError(f"{name} contains NaN or inf")
        if (norms == 0).any():
            raise ValueError(f"{name} row {int(np.flatnonzero(norms == 0)[0])} is a zero vector")
    return np.einsum("ij,ij->i", p, t) / (pn * tn)


def mean_cosine(pred: np.ndarray, target: np.ndarray) -> float:
    return float(row_cosines(pred, target).mean())


def baseline_predictions(
    contexts: np.ndarray, global_mean: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Predictions of the four baselines for ``contexts`` (n, T, d); ``global_mean`` is the mean training
    target. ``rng`` draws the random baseline (called batch after batch it continues one stream)."""
    if contexts.ndim != 3:
        raise ValueError(f"contexts must be (n, T, d), got {contexts.shape}")
    n, _, d = contexts.shape
    glob = np.asarray(global_mean)
    if glob.shape != (d,):
        raise ValueError(f"global_mean must be ({d},), got {glob.shape}")
    return {
        "random": rng.standard_normal((n, d)),
        "global_mean": np.broadcast_to(glob, (n, d)),
        "copy_last": contexts[:, -1],
        "mean_of_context": contexts.mean(axis=1),
    }


def baseline_scores(
    windows: Windows | tuple[np.ndarray, np.ndarray],
    train: Windows | np.ndarray,
    seed: int,
    *,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Mean cosine of each baseline against the targets of ``windows`` (a ``SequenceSet``/``Windows``, gathered
    ``batch_size`` at a time, or a ``(contexts, targets)`` pair). ``train`` gives the global mean: training
    ``Windows`` (streamed) or a training-targets array."""
    w = as_windows(windows, "windows")
    if isinstance(train, Windows):
        glob = as_windows(train, "train").target_mean()
    else:
        train = np.asarray(train)
        if train.ndim != 2 or train.shape[0] == 0 or train.shape[1] != w.dim:
            raise ValueError(f"train_targets must be a non-empty (m, {w.dim}) array, got shape {train.shape}")
        if train.dtype.kind not in "biuf" or not np.isfinite(train).all():
            raise ValueError("train_targets must be finite numbers")
        glob = train.mean(axis=0, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cos: dict[str, list[np.ndarray]] = {name: [] for name in BASELINES}
    for ctx, tgt in iter_batches(w, batch_size):
        for name, pred in baseline_predictions(ctx, glob, rng).items():
            cos[name].append(row_cosines(pred, tgt))
    return {name: float(np.concatenate(parts).mean()) for name, parts in cos.items()}
