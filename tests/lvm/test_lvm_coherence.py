"""Coherence statistics (streamed, both scopes), drift verdicts and the quality filter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprolab.diagnostics.coherence import (
    coherence_drift,
    coherence_stats,
    consecutive_cosines,
    pair_score,
    quality_filter,
    window_coherence,
)


def _walk(n: int, d: int, step: float, seed: int = 0) -> np.ndarray:
    """A random walk on the sphere: consecutive cosine controlled by ``step``."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), dtype=np.float32)
    cur = rng.standard_normal(d)
    for i in range(n):
        cur = cur / np.linalg.norm(cur)
        x[i] = cur
        cur = cur + step * rng.standard_normal(d) / np.sqrt(d)
    return x


def test_stream_matches_numpy_and_is_chunk_invariant(tmp_path):
    x = _walk(3001, 16, 1.0)
    np.save(tmp_path / "x.npy", x)
    cos = np.einsum("ij,ij->i", x[:-1], x[1:])
    a = coherence_stats(x, chunk_rows=5)
    b = coherence_stats(tmp_path / "x.npy", chunk_rows=1000)
    assert a.scope == "whole-stream" and a.n_pairs == 3000
    assert a.mean == pytest.approx(cos.mean(), abs=1e-6) == pytest.approx(b.mean, abs=1e-9)
    assert a.std == pytest.approx(cos.std(), abs=1e-6)
    for q, v in ((0.1, a.p10), (0.5, a.p50), (0.9, a.p90)):
        assert v == pytest.approx(np.quantile(cos, q), abs=1e-3)
    assert a.frac_low == pytest.approx((cos < 0.30).mean())
    assert sum(a.histogram) == pytest.approx(1.0)
    np.testing.assert_allclose(consecutive_cosines(x, chunk_rows=7), cos, atol=1e-6)


def test_within_articles_drops_boundary_pairs():
    x = _walk(20, 8, 0.2)
    x[10:] = -x[10:]  # the article boundary pair is anti-aligned
    ids = np.array([0] * 10 + [1] * 10)
    whole, within = coherence_stats(x), coherence_stats(x, ids, chunk_rows=3)
    assert within.scope == "within-articles" and within.n_pairs == 18
    assert within.mean > whole.mean
    with pytest.raises(ValueError, match="article_ids has shape"):
        coherence_stats(x, ids[:-1])


def test_zero_vector_raises_naming_the_row():
    x = _walk(30, 4, 0.5)
    x[12] = 0
    with pytest.raises(ValueError, match="row 12 is a zero vector"):
        coherence_stats(x, chunk_rows=5)


def test_no_pairs_raises():
    with pytest.raises(ValueError, match="no consecutive pairs"):
        coherence_stats(_walk(3, 4, 0.5), np.array([0, 1, 2]))


def test_drift_verdict_thresholds():
    base = coherence_stats(_walk(2000, 32, 0.8, 1))
    worse = coherence_stats(_walk(2000, 32, 2.0, 2))
    d = coherence_drift(base, worse)
    assert d.significant and d.mean_rel < -0.05 and d.verdict.startswith("SIGNIFICANT")
    assert not coherence_drift(base, base).significant


def test_pair_score_defined_for_mixed_signs_and_rejects_double_negative():
    s = pair_score(np.array([0.5, 0.5, -0.5, -0.6, 0.9]), np.array([0.5, -0.2, 0.4, -0.6, 0.4]))
    assert np.isfinite(s).all()
    np.testing.assert_allclose(s, [0.5, -0.2, -0.5, -0.6, 0.6])
    assert (s[3] < 0.35) and (s[1] < 0.35)  # double-negative and mixed rows never pass the bar


@settings(max_examples=60, deadline=None)
@given(st.floats(-1, 1), st.floats(-1, 1))
def test_pair_score_bounded_by_its_cosines(b, f):
    s = float(pair_score(np.array([b]), np.array([f]))[0])
    assert np.isfinite(s)
    assert s <= max(b, f) + 1e-12
    if b < 0 or f < 0:
        assert s < 0 or (b == 0 or f == 0) or s <= 0


def test_quality_filter_scores_blocklist_and_empty():
    x = _walk(40, 16, 0.3)
    ids = np.array([0] * 20 + [1] * 20)
    targets = np.array([t for t in range(5, 40) if ids[t - 5] == ids[t]])
    kept = quality_filter(x, ids, targets, min_score=0.0)
    assert kept.n_kept == targets.size
    blocked = quality_filter(x, ids, targets, min_score=0.0, titles={1: "List of things"})
    assert blocked.n_blocklisted == (ids[targets] == 1).sum()
    texts = ["Category: x" if i == 7 else "plain" for i in range(40)]
    assert quality_filter(x, ids, targets, min_score=0.0, texts=texts).n_blocklisted == 1
    with pytest.raises(ValueError, match="kept 0 of"):
        quality_filter(x, ids, targets, min_score=1.01)
    assert quality_filter(x, ids, targets, min_score=1.01, allow_empty=True).n_kept == 0
    with pytest.raises(ValueError, match="first chunk"):
        quality_filter(x, ids, np.array([20]))


def test_window_coherence_of_filtered_set_rises():
    x = np.concatenate([_walk(30, 16, 0.2, 1), _walk(30, 16, 3.0, 2)])
    ids = np.array([0] * 30 + [1] * 30)
    targets = np.array([t for t in range(5, 60) if ids[t - 5] == ids[t]])
    res = quality_filter(x, ids, targets, min_score=0.35)
    assert window_coherence(x, targets[res.mask], 5) > window_coherence(x, targets, 5)


def test_quality_filter_streams_from_npy_and_names_bad_rows(tmp_path):
    x = _walk(40, 16, 0.3)
    ids = np.array([0] * 20 + [1] * 20)
    targets = np.array([t for t in range(5, 40) if ids[t - 5] == ids[t]])
    np.save(tmp_path / "x.npy", x)
    a = quality_filter(x, ids, targets, min_score=0.0)
    b = quality_filter(tmp_path / "x.npy", ids, targets, min_score=0.0)
    np.testing.assert_allclose(a.scores, b.scores)
    x[9] = 0
    with pytest.raises(ValueError, match="row 9 is a zero vector"):
        quality_filter(x, ids, targets)
    with pytest.raises(ValueError, match="article_ids has shape"):
        quality_filter(tmp_path / "x.npy", ids[:-1], targets)


@pytest.mark.parametrize(("context", "error"), [(0, ValueError), (-1, ValueError), (2.5, TypeError), ("3", TypeError),
                                              (True, TypeError)])
def test_window_coherence_refuses_a_context_without_pairs(context, error):
    # context=0 used to average over no pairs: a silent NaN (numpy's 'Mean of empty slice').
    x = _walk(20, 8, 0.3)
    with pytest.raises(error, match=r"window_coherence: context must be (an int|>= 1)"):
        window_coherence(x, np.array([5, 6]), context)
