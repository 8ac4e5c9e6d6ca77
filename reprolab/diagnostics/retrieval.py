"""Oracle recall@K with faiss: can each sampled target be found again among all targets?

Cosine search = L2-normalise both sides + exact ``IndexFlatIP``. A hit at K means the query's own id is among
its top K. Exact self-search can only miss at K=1 when another vector scores at least as high as the query
itself -- a duplicate (or near-duplicate tie) -- so those are counted and reported instead of being read as an
index fault (the reference's R@1 0.946 was exactly this).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reprolab.diagnostics.embeddings import DEFAULT_CHUNK_ROWS, Source, iter_row_chunks

__all__ = ["OracleRecall", "build_flat_ip_index", "oracle_recall", "recall_from_results"]


def build_flat_ip_index(source: Source, *, chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """An exact inner-product index over the L2-normalised rows of ``source`` (added chunk by chunk)."""
    import faiss

    index = None
    for start, chunk in iter_row_chunks(source, chunk_rows=chunk_rows):
        norms = np.linalg.norm(chunk, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"row {start + int(np.flatnonzero(norms[:, 0] == 0)[0])} is a zero vector")
        if index is None:
            index = faiss.IndexFlatIP(chunk.shape[1])
        index.add(np.ascontiguousarray(chunk / norms, dtype=np.float32))
    if index is None:
        raise ValueError("build_flat_ip_index: the source has no rows")
    return index


@dataclass(frozen=True)
class OracleRecall:
    recall: dict[int, float]
    n_queries: int
    n_duplicate_queries: int
    """queries with another stored vector scoring >= their own score - tie_tol (a duplicate or a tie)."""
    n_tie_misses_at_1: int
    """misses at K=1 where every vector ranked ahead of the query ties with it."""
    recall_at_1_ties_as_hits: float

    def as_dict(self) -> dict[str, float]:
        out = {f"recall_at_{k}": v for k, v in self.recall.items()}
        out.update(
            n_queries=float(self.n_queries),
            n_duplicate_queries=float(self.n_duplicate_queries),
            n_tie_misses_at_1=float(self.n_tie_misses_at_1),
            recall_at_1_ties_as_hits=self.recall_at_1_ties_as_hits,
        )
        return out


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"K values must be positive integers, got {ks}")
    return ks


def recall_from_results(
    query_ids: np.ndarray, scores: np.ndarray, ids: np.ndarray, self_scores: np.ndarray, ks: Sequence[int],
    *, tie_tol: float = 1e-6,
) -> OracleRecall:
    """Recall@K and tie accounting from one search's ``(scores, ids)`` (each row sorted best first)."""
    ks = _check_ks(ks)
    q = np.asarray(query_ids)[:, None]
    found = ids == q
    rank = np.where(found.any(axis=1), found.argmax(axis=1), ids.shape[1])  # ids.shape[1] = not in the list
    recall = {k: float((rank < k).mean()) for k in ks}
    tie = (scores >= self_scores[:, None] - tie_tol) & ~found & (ids >= 0)
    dup = tie.any(axis=1)
    ahead = np.arange(ids.shape[1])[None, :] < rank[:, None]
    tie_miss = (rank > 0) & (rank < ids.shape[1]) & ~(ahead & ~tie).any(axis=1)
    return OracleRecall(
        recall, int(q.shape[0]), int(dup.sum()), int(tie_miss.sum()), float(((rank == 0) | tie_miss).mean())
    )


def oracle_recall(
    index_or_source,
    *,
    ks: Sequence[int] = (1, 5, 1000),
    n_queries: int = 1000,
    seed: int = 0,
    query_ids: np.ndarray | None = None,
    tie_tol: float = 1e-6,
) -> OracleRecall:
    """Sample ``n_queries`` stored vectors (seeded, without replacement), search them exactly, report recall@K.

    ``index_or_source`` is a faiss flat index (already normalised rows) or any source for
    :func:`build_flat_ip_index`. Recall is monotone in K by construction (one search at max K).
    """
    ks = _check_ks(ks)
    index = index_or_source if hasattr(index_or_source, "search") else build_flat_ip_index(index_or_source)
    n = index.ntotal
    if query_ids is None:
        if not 1 <= n_queries <= n:
            raise ValueError(f"n_queries must be in [1, {n}], got {n_queries}")
        query_ids = np.sort(np.random.default_rng(seed).choice(n, size=n_queries, replace=False))
    query_ids = np.asarray(query_ids, dtype=np.int64)
    if query_ids.size == 0 or query_ids.min() < 0 or query_ids.max() >= n:
        raise ValueError(f"query ids must lie in [0, {n})")
    queries = index.reconstruct_batch(query_ids)
    kmax = min(max(ks), n)
    scores, ids = index.search(queries, kmax)
    self_scores = np.einsum("ij,ij->i", queries, queries)
    return recall_from_results(query_ids, scores, ids, self_scores, ks, tie_tol=tie_tol)
