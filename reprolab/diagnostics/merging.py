"""Merging diagnostics of note 004: Merging Effect, ZS/Self ratio, baselines, and the synergy predictors.

All functions take the NxN zero-shot matrix as ``nxn[source, target]`` (rows: the model fine-tuned on a
locale, columns: the locale it is evaluated on), as ``nxn_results/*/evaluation_matrix.csv`` in the note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reprolab.validation import is_integer, is_real


def _check_nxn(nxn: np.ndarray) -> np.ndarray:
    a = np.asarray(nxn, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"the NxN matrix must be square, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("the NxN matrix contains non-finite values")
    return a


def _check_indices(n: int, target: object, sources: Sequence[int] | None) -> tuple[int, list[int]]:
    """``target`` and ``sources`` (default: every other locale) as in-range locale indices, never wrapped."""
    if not is_integer(target) or not 0 <= target < n:
        raise ValueError(f"target must be a locale index in [0, {n}), got {target!r}")
    if sources is None:
        return int(target), [i for i in range(n) if i != target]
    srcs = list(sources)
    if not srcs:
        raise ValueError("sources is empty")
    for i in srcs:
        if not is_integer(i) or not 0 <= i < n:
            raise ValueError(f"sources must be locale indices in [0, {n}), got {i!r}")
    return int(target), [int(i) for i in srcs]


def merging_effect(merged_accuracy: float, source_accuracies: Sequence[float]) -> float:
    """Merged accuracy on the target minus the mean of the sources' own (zero-shot) accuracies on it."""
    if len(source_accuracies) == 0:
        raise ValueError("merging effect needs at least one source accuracy")
    return float(merged_accuracy - np.mean(source_accuracies))


def zs_self_ratio(nxn: np.ndarray, target: int, sources: Sequence[int] | None = None) -> float:
    """Mean zero-shot accuracy of the sources (default: every other locale) on the target / its self accuracy."""
    a = _check_nxn(nxn)
    target, srcs = _check_indices(len(a), target, sources)
    if a[target, target] <= 0:
        raise ValueError(f"target {target} has zero self accuracy; the ratio is undefined")
    return float(a[srcs, target].mean() / a[target, target])


@dataclass(frozen=True)
class Baselines:
    average_zero_shot: float  # mean over the chosen sources
    best_source: float  # best of the chosen sources
    best_overall: float  # best model of any other locale
    self_accuracy: float
    pretrained: float | None


def baselines(nxn: np.ndarray, target: int, sources: Sequence[int] | None = None, pretrained: float | None = None) -> Baselines:
    a = _check_nxn(nxn)
    target, srcs = _check_indices(len(a), target, sources)
    others = [i for i in range(len(a)) if i != target]
    col = a[:, target]
    return Baselines(float(col[srcs].mean()), float(col[srcs].max()), float(col[others].max()), float(col[target]), pretrained)


@dataclass(frozen=True)
class PredictorFeatures:
    diversity: float  # 1 - mean pairwise similarity of the sources
    acc_std: float  # std of the sources' zero-shot accuracies on the target
    quality: float  # mean source accuracy on target / target self accuracy
    coherence: float  # share of sources from the most common region (their languages' region; the fixture: family)
    v1: float
    v2: float
    v3: float


def predictor_features(
    nxn: np.ndarray,
    target: int,
    sources: Sequence[int],
    source_similarity: np.ndarray,
    regions: Sequence[object],
    *,
    coherence_bonus: float = 0.05,
) -> PredictorFeatures:
    """The note's synergy scores for one target.

    V1 = diversity / (1 + 10 * acc_std) (note 004). The note names V2 (adds ``source_quality``) and V3 (V1 plus a
    regional-coherence bonus) without their exact formulas; here V2 = V1 * quality and V3 = V1 + bonus * coherence.
    """
    a = _check_nxn(nxn)
    n = len(a)
    target, srcs = _check_indices(n, target, sources)
    if len(srcs) < 2:
        raise ValueError("predictors need at least two sources (diversity is pairwise)")
    sim = np.asarray(source_similarity, dtype=np.float64)
    if sim.shape != (n, n):
        raise ValueError(f"source_similarity must have the NxN matrix's shape {(n, n)}, got {sim.shape}")
    if not np.isfinite(sim).all():
        raise ValueError("source_similarity contains non-finite values")
    if len(regions) != n:
        raise ValueError(f"regions must name one region per locale ({n}), got {len(regions)}")
    pairs = [sim[i, j] for k, i in enumerate(srcs) for j in srcs[k + 1 :]]
    diversity = 1.0 - float(np.mean(pairs))
    accs = a[srcs, target]
    acc_std = float(accs.std())
    quality = zs_self_ratio(a, target, srcs)  # refuses a zero self accuracy (inf/NaN quality otherwise)
    regs = [regions[i] for i in srcs]
    coherence = max(regs.count(r) for r in set(regs)) / len(regs)
    v1 = diversity / (1.0 + 10.0 * acc_std)
    return PredictorFeatures(diversity, acc_std, quality, coherence, v1, v1 * quality, v1 + coherence_bonus * coherence)


def predictor_accuracy(scores: Sequence[float], effects: Sequence[float], threshold: float | None = None) -> float:
    """Share of targets whose predicted class (score above threshold -> SYNERGY) matches the sign of the effect.

    Without a threshold the median score splits the targets, as the note's validation picked top- and
    bottom-ranked targets.
    """
    s = np.asarray(scores, dtype=np.float64)
    e = np.asarray(effects, dtype=np.float64)
    if s.shape != e.shape or s.size == 0:
        raise ValueError("scores and effects must be non-empty and of equal length")
    for what, arr in (("scores", s), ("effects", e)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{what} contains NaN or inf")
    if threshold is not None and (not is_real(threshold) or not np.isfinite(threshold)):
        raise ValueError(f"threshold must be a finite number or None, got {threshold!r}")
    thr = float(np.median(s)) if threshold is None else threshold
    return float(np.mean((s > thr) == (e > 0)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    r = spearmanr(x, y).statistic
    return float(r) if np.isfinite(r) else 0.0
