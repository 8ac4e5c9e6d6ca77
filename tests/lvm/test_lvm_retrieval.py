"""Oracle recall@K with faiss: ties and duplicates, monotonicity, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprolab.diagnostics.retrieval import build_flat_ip_index, oracle_recall


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_distinct_vectors_are_found_first():
    r = oracle_recall(_unit(500, 16), ks=(1, 5), n_queries=200, seed=1)
    assert r.recall == {1: 1.0, 5: 1.0}
    assert r.n_duplicate_queries == 0 and r.n_tie_misses_at_1 == 0


def test_duplicates_counted_as_ties_not_faults():
    x = _unit(300, 16)
    x = np.concatenate([x, x[:100]])  # 100 exact duplicates
    r = oracle_recall(x, ks=(1, 2), n_queries=400, seed=0)
    assert r.n_duplicate_queries == 200  # both copies of each duplicated vector
    assert r.recall[2] == 1.0
    assert r.recall[1] < 1.0
    assert r.recall_at_1_ties_as_hits == 1.0
    assert r.n_tie_misses_at_1 == round((1 - r.recall[1]) * 400)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 60), min_size=2, max_size=6))
def test_recall_is_monotone_in_k(seed, ks):
    x = _unit(60, 4, seed)  # low dimension + duplicates: plenty of near ties
    x = np.concatenate([x, x[:10]])
    r = oracle_recall(x, ks=ks, n_queries=40, seed=seed)
    values = [r.recall[k] for k in sorted(r.recall)]
    assert values == sorted(values)


def test_bad_input():
    with pytest.raises(ValueError, match="positive"):
        oracle_recall(_unit(10, 4), ks=(0, 5), n_queries=5)
    with pytest.raises(ValueError, match="n_queries"):
        oracle_recall(_unit(10, 4), n_queries=11)
    z = _unit(10, 4)
    z[4] = 0
    with pytest.raises(ValueError, match="row 4 is a zero vector"):
        build_flat_ip_index(z)


def test_index_can_be_reused():
    index = build_flat_ip_index(_unit(100, 8), chunk_rows=33)
    assert index.ntotal == 100
    assert oracle_recall(index, ks=(1,), n_queries=10).recall[1] == 1.0


def test_streamed_recall_equals_whole_index_search():
    """The chunked search (what a source gets) gives the faiss whole-index search's recall and tie counts."""
    x = _unit(700, 16, seed=3)
    x = np.concatenate([x, x[:50]])  # duplicates: the tie accounting must agree too
    whole = oracle_recall(build_flat_ip_index(x), ks=(1, 5, 100), n_queries=300, seed=2)
    for chunk_rows in (7, 64, 10_000):  # chunks smaller than K, a few, one chunk
        from reprolab.diagnostics.retrieval import _streamed_recall

        streamed = _streamed_recall(x, [1, 5, 100], 300, 2, None, 1e-6, chunk_rows=chunk_rows)
        assert streamed.recall[5] == whole.recall[5] and streamed.recall[100] == whole.recall[100]
        assert streamed.n_duplicate_queries == whole.n_duplicate_queries
        assert streamed.recall_at_1_ties_as_hits == whole.recall_at_1_ties_as_hits


def test_streamed_search_matches_exact_top_k():
    from reprolab.diagnostics.retrieval import streamed_search

    x = _unit(500, 8, seed=4)
    q = x[[3, 77, 400]]
    scores, ids = streamed_search(x, q, 20, chunk_rows=33)
    full = q @ x.T
    want = np.argsort(-full, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, axis=1), rtol=0, atol=1e-6)
