"""Coherence of consecutive embeddings, drift between two data sets, and the sequence quality filter.

Coherence = cosine of consecutive chunk vectors. The reference (note 003) computed it over the flat stream and
so also counted the pair (last chunk of article k, first chunk of article k+1); :func:`coherence_stats` does
either, and says which in ``CoherenceStats.scope``: ``"within-articles"`` when ``article_ids`` is given,
``"whole-stream"`` otherwise.

Everything streams over row chunks (:func:`reprolab.diagnostics.embeddings.iter_row_chunks`); percentiles come
from a fixed fine histogram (8,192 bins on [-1, 1], error below 2.5e-4), so memory does not grow with the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reprolab.diagnostics.embeddings import Source, iter_row_chunks, source_shape
from reprolab.validation import check_int

# 2,048 rows x 768 float32 = 6 MB: small enough that the second pass over a chunk is served from cache.
COHERENCE_CHUNK_ROWS = 2048

__all__ = [
    "BLOCKLIST",
    "HISTOGRAM_EDGES",
    "CoherenceDrift",
    "CoherenceStats",
    "QualityFilterResult",
    "coherence_drift",
    "coherence_stats",
    "consecutive_cosines",
    "pair_score",
    "quality_filter",
    "window_coherence",
]

LOW_COHERENCE = 0.30
HISTOGRAM_EDGES = np.round(np.arange(-0.2, 1.0 + 1e-9, 0.1), 10)  # -0.2, -0.1, ..., 1.0 (note 003's table)
BLOCKLIST = r"List of|Disambiguation|Category:"
_FINE_BINS = 8192


def consecutive_cosines(
    source: Source, *, chunk_rows: int = COHERENCE_CHUNK_ROWS, name: str = "embeddings"
) -> np.ndarray:
    """All n-1 cosines cos(x_i, x_{i+1}) of the flat stream (float32; n-1 values, small next to the vectors)."""
    (n, _), _ = source_shape(source)
    out = np.empty(max(n - 1, 0), dtype=np.float32)
    for start, cos in _iter_cosines(source, chunk_rows, name):
        out[start : start + cos.size] = cos
    return out


def _iter_cosines(source: Source, chunk_rows: int, name: str):
    """Yield ``(pair_start, cosines)`` where cosines[k] = cos(x[pair_start+k], x[pair_start+k+1]).

    Two einsum passes per chunk (squared norms, neighbour dots) and no normalised copy: the chunk is read once
    from disk and twice from cache, which is what keeps this near memory bandwidth.
    """
    prev_row: np.ndarray | None = None
    prev_sq = 0.0
    # Finiteness is checked on the squared norms (a NaN/inf element makes its row's norm non-finite), which
    # saves the separate isfinite pass over every element.
    for start, chunk in iter_row_chunks(source, chunk_rows=chunk_rows, check_finite=False):
        sq = np.einsum("ij,ij->i", chunk, chunk)
        if not np.isfinite(sq).all():
            bad = start + int(np.flatnonzero(~np.isfinite(sq))[0])
            raise ValueError(f"{name}: row {bad} contains NaN or inf (or overflows float32 when squared)")
        if not sq.all():
            raise ValueError(f"{name}: row {start + int(np.flatnonzero(sq == 0)[0])} is a zero vector; cosine undefined")
        dots = np.einsum("ij,ij->i", chunk[:-1], chunk[1:])
        cos = dots / np.sqrt(sq[:-1] * sq[1:])
        if prev_row is not None:
            first = float(prev_row @ chunk[0]) / float(np.sqrt(prev_sq * sq[0]))
            yield start - 1, np.concatenate([np.float32([first]), cos])
        else:
            yield start, cos
        prev_row, prev_sq = chunk[-1].copy(), float(sq[-1])


@dataclass(frozen=True)
class CoherenceStats:
    scope: str
    n_pairs: int
    mean: float
    std: float
    p10: float
    p50: float
    p90: float
    frac_low: float
    """fraction of pairs with cosine below ``low`` (0.30 in note 003)."""
    low: float
    histogram: tuple[float, ...]
    """fractions in [-0.2,-0.1), ..., [0.9,1.0]; values below -0.2 count in the first bin, as do none above 1."""

    def as_dict(self) -> dict[str, float]:
        out = {k: float(getattr(self, k)) for k in ("n_pairs", "mean", "std", "p10", "p50", "p90", "frac_low")}
        for lo, frac in zip(HISTOGRAM_EDGES[:-1], self.histogram, strict=True):
            out[f"hist_{lo:+.1f}"] = float(frac)
        return out


def _percentile(counts: np.ndarray, q: float) -> float:
    cum = np.cumsum(counts)
    target = q * cum[-1]
    i = int(np.searchsorted(cum, target))
    lo_edge = -1.0 + 2.0 * i / _FINE_BINS
    before = cum[i - 1] if i > 0 else 0
    inside = counts[i] if counts[i] > 0 else 1
    return float(lo_edge + (target - before) / inside * (2.0 / _FINE_BINS))


def coherence_stats(
    source: Source,
    article_ids: np.ndarray | None = None,
    *,
    low: float = LOW_COHERENCE,
    chunk_rows: int = COHERENCE_CHUNK_ROWS,
    name: str = "embeddings",
) -> CoherenceStats:
    """Coherence statistics in one streaming pass.

    With ``article_ids`` (one per row) pairs that cross an article boundary are left out (scope
    ``within-articles``); without, every consecutive pair counts (``whole-stream``, what the reference did).
    """
    (n, _), _ = source_shape(source)
    if article_ids is not None:
        article_ids = np.asarray(article_ids)
        if article_ids.shape != (n,):
            raise ValueError(f"{name}: article_ids has shape {article_ids.shape}, expected ({n},)")
    fine = np.zeros(_FINE_BINS, dtype=np.int64)
    coarse = np.zeros(HISTOGRAM_EDGES.size - 1, dtype=np.int64)
    count = n_low = 0
    s1 = s2 = 0.0
    for start, cos in _iter_cosines(source, chunk_rows, name):
        if article_ids is not None:
            same = article_ids[start : start + cos.size] == article_ids[start + 1 : start + 1 + cos.size]
            cos = cos[same]
        if cos.size == 0:
            continue
        c64 = cos.astype(np.float64)
        count += c64.size
        s1 += float(c64.sum())
        s2 += float(c64 @ c64)
        n_low += int((c64 < low).sum())
        idx = np.clip(((c64 + 1.0) * (_FINE_BINS / 2.0)).astype(np.int64), 0, _FINE_BINS - 1)
        fine += np.bincount(idx, minlength=_FINE_BINS)
        cidx = np.clip(np.searchsorted(HISTOGRAM_EDGES, c64, side="right") - 1, 0, coarse.size - 1)
        coarse += np.bincount(cidx, minlength=coarse.size)
    if count == 0:
        raise ValueError(f"{name}: no consecutive pairs to measure (fewer than 2 rows per article)")
    mean = s1 / count
    return CoherenceStats(
        scope="whole-stream" if article_ids is None else "within-articles",
        n_pairs=count,
        mean=mean,
        std=float(np.sqrt(max(s2 / count - mean * mean, 0.0))),
        p10=_percentile(fine, 0.10),
        p50=_percentile(fine, 0.50),
        p90=_percentile(fine, 0.90),
        frac_low=n_low / count,
        low=low,
        histogram=tuple((coarse / count).tolist()),
    )


@dataclass(frozen=True)
class CoherenceDrift:
    mean_drift: float
    """current.mean - baseline.mean."""
    mean_rel: float
    """mean_drift / baseline.mean."""
    low_change_pp: float
    """(current.frac_low - baseline.frac_low) in percentage points."""
    significant: bool
    verdict: str


def coherence_drift(
    baseline: CoherenceStats, current: CoherenceStats, *, max_mean_drop: float = 0.05, max_low_rise_pp: float = 5.0
) -> CoherenceDrift:
    """Note 003's verdict: significant degradation when the mean drops by more than 5% (relative) or the share of
    low-coherence pairs rises by more than 5 percentage points."""
    if baseline.mean == 0:
        raise ValueError("coherence_drift: baseline mean coherence is 0; relative drift undefined")
    drift = current.mean - baseline.mean
    rel = drift / baseline.mean
    low_pp = 100.0 * (current.frac_low - baseline.frac_low)
    significant = rel < -max_mean_drop or low_pp > max_low_rise_pp
    verdict = "SIGNIFICANT QUALITY DEGRADATION" if significant else "NO SIGNIFICANT DRIFT"
    return CoherenceDrift(drift, rel, low_pp, significant, verdict)


# --------------------------------------------------------------------------------------------- quality filter


def pair_score(back: np.ndarray, fwd: np.ndarray) -> np.ndarray:
    """Score of a chunk from the cosines to its predecessor (``back``) and successor (``fwd``).

    The reference used ``sqrt(back * fwd)``: NaN when the signs differ (those rows were silently dropped) and
    *positive* when both are negative (two anti-aligned neighbours passed the 0.35 bar). Here: the geometric
    mean when both are positive, otherwise the smaller cosine, so a score is always defined, never exceeds
    either positive cosine, and is negative whenever a neighbour is anti-aligned.
    """
    back = np.asarray(back, dtype=np.float64)
    fwd = np.asarray(fwd, dtype=np.float64)
    if not (np.isfinite(back).all() and np.isfinite(fwd).all()):
        raise ValueError("pair_score: cosines contain NaN or inf")
    both_pos = (back > 0) & (fwd > 0)
    geo = np.sqrt(np.where(both_pos, back * fwd, 0.0))
    return np.where(both_pos, geo, np.minimum(back, fwd))


@dataclass(frozen=True)
class QualityFilterResult:
    mask: np.ndarray
    scores: np.ndarray
    n_total: int
    n_kept: int
    n_low_score: int
    n_blocklisted: int

    @property
    def kept_fraction(self) -> float:
        return self.n_kept / self.n_total if self.n_total else 0.0


def quality_filter(
    source: Source,
    article_ids: np.ndarray,
    targets: np.ndarray,
    *,
    min_score: float = 0.35,
    titles: dict[int, str] | None = None,
    texts: Sequence[str] | None = None,
    blocklist: str | None = BLOCKLIST,
    allow_empty: bool = False,
    pair_cos: np.ndarray | None = None,
) -> QualityFilterResult:
    """Keep a sequence (target row ``t``) when its target's :func:`pair_score` >= ``min_score`` and neither its
    article title nor its target text matches ``blocklist`` (a regex; the reference's "List of|Disambiguation|
    Category:"). ``back`` = cos(x[t-1], x[t]); ``fwd`` = cos(x[t], x[t+1]) when ``t+1`` is in the same article,
    else ``back`` again (the last chunk of an article has one neighbour).

    The vectors are only read through :func:`consecutive_cosines` (streamed); pass ``pair_cos`` to reuse one
    pass for several calls. An empty result raises ``ValueError`` unless ``allow_empty``: training on nothing is
    never intended.
    """
    targets = np.asarray(targets, dtype=np.int64)
    article_ids = np.asarray(article_ids)
    cos = consecutive_cosines(source) if pair_cos is None else np.asarray(pair_cos)
    n = cos.size + 1
    if article_ids.shape != (n,):
        raise ValueError(f"quality_filter: article_ids has shape {article_ids.shape}, expected ({n},)")
    if targets.size and (targets.min() < 1 or targets.max() >= n):
        raise ValueError(f"quality_filter: target rows must lie in [1, {n}), got [{targets.min()}, {targets.max()}]")
    if targets.size and (article_ids[targets - 1] != article_ids[targets]).any():
        raise ValueError("quality_filter: a target is the first chunk of its article (no predecessor in the article)")
    back = cos[targets - 1].astype(np.float64)
    nxt = np.minimum(targets, n - 2)  # cos[t] = cos(x[t], x[t+1]); clipped index only used where valid
    has_next = (targets + 1 < n) & (article_ids[np.minimum(targets + 1, n - 1)] == article_ids[targets])
    fwd = np.where(has_next, cos[nxt], back)
    scores = pair_score(back, fwd)
    keep_score = scores >= min_score
    blocked = np.zeros(targets.size, dtype=bool)
    if blocklist:
        pattern = re.compile(blocklist)
        if titles:
            bad_articles = [a for a, t in titles.items() if pattern.search(t)]
            blocked |= np.isin(article_ids[targets], bad_articles)
        if texts is not None:
            blocked |= np.fromiter((bool(pattern.search(texts[t])) for t in targets), dtype=bool, count=targets.size)
    mask = keep_score & ~blocked
    result = QualityFilterResult(
        mask, scores, int(targets.size), int(mask.sum()), int((~keep_score).sum()), int(blocked.sum())
    )
    if result.n_kept == 0 and not allow_empty:
        raise ValueError(
            f"quality_filter kept 0 of {targets.size} sequences (min_score={min_score}, "
            f"{result.n_low_score} below the score, {result.n_blocklisted} blocklisted)"
        )
    return result


def window_coherence(
    source: Source, targets: np.ndarray, context: int, *, pair_cos: np.ndarray | None = None
) -> float:
    """Mean cosine of consecutive pairs inside the windows ``[t - context, t]`` (the coherence of a sequence set,
    as note 003 reports it for the filtered set). Windows never cross articles (see ``make_windows``)."""
    check_int("window_coherence: context", context, minimum=1)  # a window needs a pair
    targets = np.asarray(targets, dtype=np.int64)
    if targets.size == 0:
        raise ValueError("window_coherence: no sequences")
    cos = consecutive_cosines(source) if pair_cos is None else np.asarray(pair_cos)
    if targets.min() < context or targets.max() > cos.size:
        raise ValueError(f"window_coherence: targets must lie in [{context}, {cos.size}]")
    return float(cos[targets[:, None] + np.arange(-context, 0)].astype(np.float64).mean())
