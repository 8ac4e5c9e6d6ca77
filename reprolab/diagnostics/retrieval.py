"""Oracle recall@K with faiss: can each sampled target be found again among all targets?

Cosine search = L2-normalise both sides + exact inner-product search: a faiss ``IndexFlatIP`` when the caller
passes one, otherwise :func:`streamed_search` over the source's row chunks (memory: the queries and a
queries x (K + chunk) block, never the N x d corpus). A hit at K means the query's own id is among
its top K. Exact self-search can only miss at K=1 when another vector scores at least as high as the query
itself -- a duplicate (or near-duplicate tie) -- so those are counted and reported instead of being read as an
index fault (the reference's R@1 0.946 was exactly this).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reprolab.diagnostics.embeddings import DEFAULT_CHUNK_ROWS, Source, iter_row_chunks, source_shape

__all__ = ["OracleRecall", "build_flat_ip_index", "oracle_recall", "recall_from_results", "streamed_search"]


def _unit_chunks(source: Source, chunk_rows: int):
    """``(first_row, L2-normalised float32 chunk)`` over ``source``; a zero row raises naming it."""
    for start, chunk in iter_row_chunks(source, chunk_rows=chunk_rows):
        norms = np.linalg.norm(chunk, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"row {start + int(np.flatnonzero(norms[:, 0] == 0)[0])} is a zero vector")
        yield start, np.ascontiguousarray(chunk / norms, dtype=np.float32)


def build_flat_ip_index(source: Source, *, chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """An exact inner-product index over the L2-normalised rows of ``source`` (added chunk by chunk)."""
    import faiss

    index = None
    for _, unit in _unit_chunks(source, chunk_rows):
        if index is None:
            index = faiss.IndexFlatIP(unit.shape[1])
        index.add(unit)
    if index is None:
        raise ValueError("build_flat_ip_index: the source has no rows")
    return index


def _gather_rows(source: Source, row_ids: np.ndarray, chunk_rows: int) -> tuple[np.ndarray, int]:
    """The L2-normalised rows ``row_ids`` (sorted) of ``source`` and its row count, in one streaming pass."""
    out: list[np.ndarray] = []
    n = 0
    for start, unit in _unit_chunks(source, chunk_rows):
        lo, hi = np.searchsorted(row_ids, [start, start + unit.shape[0]])
        out.append(unit[row_ids[lo:hi] - start])
        n = start + unit.shape[0]
    if n == 0:
        raise ValueError("oracle_recall: the source has no rows")
    return (np.concatenate(out) if out else np.empty((0, 0), np.float32)), n


def streamed_search(
    source: Source, queries: np.ndarray, k: int, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product search of unit ``queries`` over the L2-normalised rows of ``source``, one
    row chunk at a time: ``(scores, ids)``, each row best first (ties by ascending id), ``k`` capped at N.
    As in faiss, rows tied with the k-th score may be cut either way; a row scoring above it is always kept.

    Memory is ``queries`` plus a queries x (k + chunk) block: the corpus is never held (faiss's flat index
    would copy all N x d of it)."""
    nq = queries.shape[0]
    best_s = np.full((nq, 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((nq, 0), dtype=np.int64)
    for start, unit in _unit_chunks(source, chunk_rows):
        s = np.concatenate([best_s, queries @ unit.T], axis=1)
        i = np.concatenate(
            [best_i, np.broadcast_to(np.arange(start, start + unit.shape[0]), (nq, unit.shape[0]))], axis=1
        )
        if s.shape[1] > k:
            # keep the k largest (argpartition: a full sort per chunk costs 15x the product itself)
            keep = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s, i = np.take_along_axis(s, keep, axis=1), np.take_along_axis(i, keep, axis=1)
        best_s, best_i = s, i
    order = np.lexsort((best_i, -best_s), axis=1)
    return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)


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
    query_ids: np.ndarray,
    scores: np.ndarray,
    ids: np.ndarray,
    self_scores: np.ndarray,
    ks: Sequence[int],
    *,
    tie_tol: float = 1e-6,
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

    ``index_or_source`` is a faiss flat index (already normalised rows, searched by faiss) or any source of
    :func:`iter_row_chunks` (searched by :func:`streamed_search`, memory bounded by the chunk). Recall is
    monotone in K by construction (one search at max K).
    """
    ks = _check_ks(ks)
    if not hasattr(index_or_source, "search"):
        return _streamed_recall(index_or_source, ks, n_queries, seed, query_ids, tie_tol)
    index = index_or_source
    n = index.ntotal
    query_ids = _sample_queries(n, n_queries, seed, query_ids)
    queries = index.reconstruct_batch(query_ids)
    kmax = min(max(ks), n)
    scores, ids = index.search(queries, kmax)
    self_scores = np.einsum("ij,ij->i", queries, queries)
    return recall_from_results(query_ids, scores, ids, self_scores, ks, tie_tol=tie_tol)


def _sample_queries(n: int, n_queries: int, seed: int, query_ids: np.ndarray | None) -> np.ndarray:
    if query_ids is None:
        if not 1 <= n_queries <= n:
            raise ValueError(f"n_queries must be in [1, {n}], got {n_queries}")
        query_ids = np.sort(np.random.default_rng(seed).choice(n, size=n_queries, replace=False))
    query_ids = np.asarray(query_ids, dtype=np.int64)
    if query_ids.size == 0 or query_ids.min() < 0 or query_ids.max() >= n:
        raise ValueError(f"query ids must lie in [0, {n})")
    return query_ids


def _streamed_recall(
    source: Source,
    ks: list[int],
    n_queries: int,
    seed: int,
    query_ids: np.ndarray | None,
    tie_tol: float,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> OracleRecall:
    (n, _d), _ = source_shape(source)
    query_ids = _sample_queries(n, n_queries, seed, query_ids)
    order = np.argsort(query_ids, kind="stable")
    gathered, _ = _gather_rows(source, query_ids[order], chunk_rows)
    queries = np.empty_like(gathered)
    queries[order] = gathered
    scores, ids = streamed_search(source, queries, min(max(ks), n), chunk_rows=chunk_rows)
    self_scores = np.einsum("ij,ij->i", queries, queries)
    return recall_from_results(query_ids, scores, ids, self_scores, ks, tie_tol=tie_tol)
