"""Fingerprint, streaming norm/element statistics and collapse metrics; bad input errors."""

from __future__ import annotations

import numpy as np
import pytest

from reprolab.diagnostics.embeddings import (
    alignment,
    collapse_metrics,
    element_stats,
    encoder_fingerprint,
    iter_row_chunks,
    norm_stats,
    require_unit_norm,
    uniformity,
)


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_fingerprint_is_stable_and_sensitive():
    v = _unit(4, 16)
    assert encoder_fingerprint(v) == encoder_fingerprint(v.copy())
    assert encoder_fingerprint(v) == encoder_fingerprint(v + 1e-7)  # last-bit noise is rounded away (almost surely)
    assert encoder_fingerprint(v) != encoder_fingerprint(v[::-1])
    assert len(encoder_fingerprint(v)) == 64
    with pytest.raises(ValueError, match="NaN"):
        encoder_fingerprint(np.array([[np.nan, 1.0]]))


def test_norm_stats_stream_from_npy_equals_memory(tmp_path):
    v = _unit(1000, 8)
    np.save(tmp_path / "v.npy", v)
    a = norm_stats(v, chunk_rows=7)
    b = norm_stats(tmp_path / "v.npy", chunk_rows=64)
    c = norm_stats(np.load(tmp_path / "v.npy", mmap_mode="r"), chunk_rows=999)
    assert a.ok and b.ok and c.ok
    assert a.mean == pytest.approx(b.mean, abs=1e-12) == pytest.approx(c.mean, abs=1e-12)


def test_not_unit_normalised_raises():
    with pytest.raises(ValueError, match="not unit-normalised"):
        require_unit_norm(_unit(10, 4) * 2.0)
    z = _unit(10, 4)
    z[3] = 0
    with pytest.raises(ValueError, match="1 zero rows"):
        require_unit_norm(z)


def test_nan_row_named(tmp_path):
    v = _unit(50, 4)
    v[17, 2] = np.nan
    np.save(tmp_path / "v.npy", v)
    with pytest.raises(ValueError, match="row 17"):
        norm_stats(tmp_path / "v.npy", chunk_rows=8)


def test_wrong_dimension_and_dtype():
    with pytest.raises(ValueError, match="dimension 8"):
        list(iter_row_chunks(_unit(3, 4), dim=8))
    with pytest.raises(TypeError, match="float"):
        list(iter_row_chunks(np.zeros((3, 4), dtype=np.int32)))
    with pytest.raises(ValueError, match="2-D"):
        norm_stats(np.zeros(5, dtype=np.float32))


def test_truncated_npy_detected(tmp_path):
    np.save(tmp_path / "v.npy", _unit(100, 4))
    raw = (tmp_path / "v.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:-40])
    with pytest.raises(ValueError, match="truncated"):
        norm_stats(tmp_path / "t.npy", chunk_rows=16)


def test_element_stats_follow_unit_norm_identity():
    v = _unit(2000, 32)
    s = element_stats(v, chunk_rows=100)
    assert s.std**2 == pytest.approx(1 / 32 - s.mean**2, rel=1e-6)


def test_collapse_metrics_extremes():
    iso = collapse_metrics(_unit(20000, 16))
    assert iso.std_ratio == pytest.approx(1.0, abs=0.03)
    assert iso.effective_rank > 15
    same = collapse_metrics(np.repeat(_unit(1, 16), 50, axis=0))
    assert same.std_ratio == pytest.approx(0.0, abs=1e-6)
    assert same.effective_rank <= 1.0 + 1e-6


def test_alignment_uniformity():
    x = _unit(500, 8)
    assert alignment(x, x) == pytest.approx(0.0, abs=1e-12)
    assert alignment(x, -x) == pytest.approx(4.0)
    spread, clumped = uniformity(x), uniformity(np.repeat(x[:2], 250, axis=0))
    assert spread < clumped
    with pytest.raises(ValueError, match="zero vector"):
        alignment(np.zeros((2, 3)), np.ones((2, 3)))
