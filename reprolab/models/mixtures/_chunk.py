"""Row-chunked evaluation for the mixtures' E-steps, so memory stays bounded at MNIST scale.

An E-step at N = 70,000, K = 200 would hold N x K x L posterior means (2.8 GB at L = 50) and, for the M-step
moments, more; instead the rows are processed in chunks of ``chunk_rows`` under one ``lax.scan`` that sums
the sufficient statistics. Rows are zero-padded to a whole number of chunks and a 0/1 mask removes the
padding from every statistic. With ``N <= chunk_rows`` the function is called once on the unpadded data, so
small problems compute exactly what an unchunked step would. Per-row inputs that travel with the data
(responsibilities for an M-step or a loss) are passed as extra columns of ``X`` (``jnp.concatenate``): zero
padding gives padded rows zero weight as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# Floats per row-chunk intermediate of shape (rows, K, L): 2**24 floats = 64 MiB each in float32.
_CHUNK_FLOATS = 2**24


def log_responsibilities(log_weights: jax.Array, log_prob: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log p(k | x) (N, K), log p(x) (N,)) from log weights and component log-densities."""
    joint = log_weights[None, :] + log_prob
    log_px = jax.nn.logsumexp(joint, axis=1)
    return joint - log_px[:, None], log_px


def chunk_rows(n_rows: int, per_row: int) -> int:
    """Rows per chunk so that one (rows, per_row) float32 intermediate stays near 64 MiB."""
    return int(max(64, min(n_rows, _CHUNK_FLOATS // max(per_row, 1))))


def _padded(X: jax.Array, rows: int) -> tuple[jax.Array, jax.Array]:
    n = X.shape[0]
    n_chunks = -(-n // rows)
    pad = n_chunks * rows - n
    Xp = jnp.pad(X, ((0, pad), (0, 0))).reshape(n_chunks, rows, X.shape[1])
    mask = (jnp.arange(n_chunks * rows) < n).astype(X.dtype).reshape(n_chunks, rows)
    return Xp, mask


def chunked_sum(fn: Callable[[jax.Array, jax.Array], Any], X: jax.Array, rows: int) -> Any:
    """Sum over row chunks of ``fn(X_chunk, mask_chunk)`` (a pytree); ``fn`` must weight rows by the mask."""
    if X.shape[0] <= rows:
        return fn(X, jnp.ones(X.shape[0], X.dtype))
    Xp, mask = _padded(X, rows)
    init = jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(fn, Xp[0], mask[0]))

    def body(acc, chunk):
        out = fn(*chunk)
        return jax.tree_util.tree_map(jnp.add, acc, out), None

    total, _ = jax.lax.scan(body, init, (Xp, mask))
    return total


def chunked_map(fn: Callable[[jax.Array], jax.Array], X: jax.Array, rows: int) -> jax.Array:
    """``fn`` (rows -> rows x ...) applied chunk by chunk and concatenated; padding rows are dropped."""
    n = X.shape[0]
    if n <= rows:
        return fn(X)
    Xp, _ = _padded(X, rows)
    out = jax.lax.map(fn, Xp)
    return out.reshape(-1, *out.shape[2:])[:n]
