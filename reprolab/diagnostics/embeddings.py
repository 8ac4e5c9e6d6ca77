"""Embedding checks: encoder fingerprint, norm statistics, element statistics, collapse metrics.

Everything that reads a whole embedding file streams it in row chunks (:func:`iter_row_chunks`), so a
726,014 x 768 float32 file (2.2 GB) is never loaded whole: memory is one chunk plus O(d^2) accumulators.
A source is an in-memory array, an ``np.memmap`` / ``np.load(mmap_mode='r')`` array, or the path of a
``.npy`` file (read with ``readinto`` into one reused buffer, faster than page-faulting a memmap).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CollapseMetrics",
    "ElementStats",
    "NormStats",
    "Source",
    "alignment",
    "collapse_metrics",
    "element_stats",
    "encoder_fingerprint",
    "iter_row_chunks",
    "norm_stats",
    "require_unit_norm",
    "source_shape",
    "uniformity",
]

Source = np.ndarray | str | Path
DEFAULT_CHUNK_ROWS = 8192
_FLOAT_KINDS = (np.float16, np.float32, np.float64)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError as exc:
            raise ValueError(f"{path}: not a .npy file ({exc})") from None
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"{path}: unsupported .npy format version {version}")
        return shape, dtype, fortran, f.tell()


def source_shape(source: Source) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``source`` without reading its data."""
    if isinstance(source, (str, Path)):
        shape, dtype, _, _ = _npy_header(Path(source))
        return shape, dtype
    if not isinstance(source, np.ndarray):
        raise TypeError(f"embedding source must be an array or a .npy path, got {type(source).__name__}")
    return source.shape, source.dtype


def _check_layout(name: str, shape: tuple[int, ...], dtype: np.dtype, dim: int | None) -> None:
    if len(shape) != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows x dim), got shape {shape}")
    if dtype.type not in _FLOAT_KINDS:
        raise TypeError(f"{name}: expected float16/32/64 vectors, got dtype {dtype}")
    if dim is not None and shape[1] != dim:
        raise ValueError(f"{name}: expected dimension {dim}, got {shape[1]}")


def iter_row_chunks(
    source: Source, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, dim: int | None = None, check_finite: bool = True
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, float32 chunk)`` over ``source`` in order; never materialises the whole array.

    The yielded chunk of a path source is a reused buffer: copy it if you keep it past the next iteration.
    Non-finite values raise ``ValueError`` naming the source and the first bad row.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    name = str(source) if isinstance(source, (str, Path)) else f"array{getattr(source, 'shape', '')}"
    shape, dtype = source_shape(source)
    _check_layout(name, shape, dtype, dim)
    n, d = shape

    def checked(start: int, chunk: np.ndarray) -> tuple[int, np.ndarray]:
        if check_finite and not np.isfinite(chunk).all():
            bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
            raise ValueError(f"{name}: row {bad} contains NaN or inf")
        return start, chunk

    if isinstance(source, np.ndarray):
        for start in range(0, n, chunk_rows):
            block = source[start : start + chunk_rows]
            yield checked(start, np.ascontiguousarray(block, dtype=np.float32))
        return

    path = Path(source)
    _, _, fortran, offset = _npy_header(path)
    if fortran:
        raise ValueError(f"{path}: Fortran-ordered .npy cannot be streamed by rows; save it C-ordered")
    # Double buffering: a reader thread fills one buffer (``readinto`` releases the GIL) while the caller
    # computes on the other, so disk/page-cache reads overlap with the arithmetic.
    buffers = [np.empty(chunk_rows * d, dtype=dtype) for _ in range(2)]
    starts = list(range(0, n, chunk_rows))

    def read(f, k: int) -> np.ndarray:
        start = starts[k]
        rows = min(chunk_rows, n - start)
        view = buffers[k % 2][: rows * d]
        got = f.readinto(memoryview(view).cast("B"))
        if got != view.nbytes:
            raise ValueError(f"{path}: file is truncated at row {start} (read {got} of {view.nbytes} bytes)")
        return view.reshape(rows, d)

    with open(path, "rb", buffering=0) as f, ThreadPoolExecutor(max_workers=1) as pool:
        f.seek(offset)
        pending = pool.submit(read, f, 0) if starts else None
        for k, start in enumerate(starts):
            block = pending.result()  # type: ignore[union-attr]
            pending = pool.submit(read, f, k + 1) if k + 1 < len(starts) else None
            yield checked(start, block if dtype == np.float32 else block.astype(np.float32))


# --------------------------------------------------------------------------------------------- fingerprint


def encoder_fingerprint(vectors: np.ndarray, *, decimals: int = 4) -> str:
    """sha256 of the probe vectors rounded to ``decimals`` (plus their shape): reproducible across processes.

    The reference used Python's ``hash()``, which is salted per process (PYTHONHASHSEED), so its "fingerprint"
    changed on every run. Rounding absorbs last-bit BLAS differences; ``-0.0`` is folded into ``0.0``.
    """
    v = np.asarray(vectors, dtype=np.float64)
    if v.size == 0:
        raise ValueError("encoder_fingerprint: empty probe vectors")
    if not np.isfinite(v).all():
        raise ValueError("encoder_fingerprint: probe vectors contain NaN or inf")
    rounded = np.round(v, decimals) + 0.0
    h = hashlib.sha256()
    h.update(repr(v.shape).encode())
    h.update(rounded.astype("<f8").tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- norms


@dataclass(frozen=True)
class NormStats:
    n: int
    mean: float
    std: float
    min: float
    max: float
    n_zero: int
    ok: bool
    """``|mean - 1| < tol_mean`` and ``std < tol_std`` (the note's check, 0.01 each) and no zero rows."""

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def norm_stats(
    source: Source, *, tol_mean: float = 0.01, tol_std: float = 0.01, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> NormStats:
    """Row L2-norm statistics of ``source`` in one streaming pass (float64 accumulators)."""
    n = 0
    s1 = s2 = 0.0
    lo, hi = np.inf, -np.inf
    n_zero = 0
    for _, chunk in iter_row_chunks(source, chunk_rows=chunk_rows):
        norms = np.sqrt(np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64))
        n += norms.size
        s1 += float(norms.sum())
        s2 += float(np.dot(norms, norms))
        lo, hi = min(lo, float(norms.min())), max(hi, float(norms.max()))
        n_zero += int((norms == 0).sum())
    if n == 0:
        raise ValueError("norm_stats: the source has no rows")
    mean = s1 / n
    std = float(np.sqrt(max(s2 / n - mean * mean, 0.0)))
    ok = abs(mean - 1.0) < tol_mean and std < tol_std and n_zero == 0
    return NormStats(n, mean, std, lo, hi, n_zero, ok)


def require_unit_norm(source: Source, *, name: str = "embeddings", **kwargs: float) -> NormStats:
    """:func:`norm_stats`, raising ``ValueError`` when the rows are not unit-normalised (or some are zero)."""
    stats = norm_stats(source, **kwargs)
    if not stats.ok:
        raise ValueError(
            f"{name} are not unit-normalised: norm mean {stats.mean:.6f}, std {stats.std:.6f}, "
            f"min {stats.min:.6f}, max {stats.max:.6f}, {stats.n_zero} zero rows"
        )
    return stats


@dataclass(frozen=True)
class ElementStats:
    """Mean and std over every element: the reference's "data quality check" (note 002)."""

    n_rows: int
    mean: float
    std: float
    mean_norm: float


def element_stats(source: Source, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ElementStats:
    """Streaming element mean/std. On unit rows std^2 = 1/d - mean^2, so this check cannot tell data sets apart."""
    n = 0
    s1 = s2 = sn = 0.0
    d = 0
    for _, chunk in iter_row_chunks(source, chunk_rows=chunk_rows):
        d = chunk.shape[1]
        n += chunk.shape[0]
        s1 += float(chunk.sum(dtype=np.float64))
        sq = np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64)
        s2 += float(sq.sum())
        sn += float(np.sqrt(sq).sum())
    if n == 0:
        raise ValueError("element_stats: the source has no rows")
    mean = s1 / (n * d)
    return ElementStats(n, mean, float(np.sqrt(max(s2 / (n * d) - mean**2, 0.0))), sn / n)


# --------------------------------------------------------------------------------------------- collapse


@dataclass(frozen=True)
class CollapseMetrics:
    dim: int
    mean_dim_std: float
    """mean over dimensions of the per-dimension std."""
    isotropic_dim_std: float
    """1/sqrt(d): the per-dimension std of unit vectors spread evenly; the most a unit vector set can reach."""
    std_ratio: float
    """mean_dim_std / (1/sqrt(d)); near 0 means collapse."""
    effective_rank: float
    """exp(entropy of the normalised covariance eigenvalues) (Roy & Vetterli); 1 = a single direction."""

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def collapse_metrics(source: Source, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> CollapseMetrics:
    """Collapse diagnostics from one streaming pass (sum and d x d second-moment accumulators)."""
    n = 0
    s: np.ndarray | None = None
    m2: np.ndarray | None = None
    for _, chunk in iter_row_chunks(source, chunk_rows=chunk_rows):
        c = chunk.astype(np.float64)
        if s is None:
            s = np.zeros(c.shape[1])
            m2 = np.zeros((c.shape[1], c.shape[1]))
        s += c.sum(axis=0)
        m2 += c.T @ c  # type: ignore[operator]
        n += c.shape[0]
    if s is None or m2 is None or n < 2:
        raise ValueError("collapse_metrics: need at least 2 rows")
    d = s.size
    mu = s / n
    cov = (m2 - n * np.outer(mu, mu)) / (n - 1)
    dim_std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    eig = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    total = eig.sum()
    if total <= 0:
        eff_rank = 1.0  # every row identical: complete collapse
    else:
        p = eig[eig > 0] / total
        eff_rank = float(np.exp(-(p * np.log(p)).sum()))
    iso = 1.0 / np.sqrt(d)
    return CollapseMetrics(d, float(dim_std.mean()), iso, float(dim_std.mean() / iso), eff_rank)


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected 2-D rows, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or inf")
    if (norms == 0).any():
        raise ValueError(f"{name}: row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is a zero vector")
    return x / norms


def alignment(pred: np.ndarray, target: np.ndarray, *, alpha: float = 2.0) -> float:
    """Wang & Isola alignment E ||f(x) - f(y)||^alpha over positive pairs (rows normalised first); lower is better."""
    p, t = _unit_rows(pred, "pred"), _unit_rows(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"alignment: pred {p.shape} and target {t.shape} differ")
    return float((np.linalg.norm(p - t, axis=1) ** alpha).mean())


def uniformity(x: np.ndarray, *, t: float = 2.0, n_pairs: int = 20000, seed: int = 0) -> float:
    """Wang & Isola uniformity log E exp(-t ||xi - xj||^2) over sampled distinct pairs; lower = more uniform."""
    u = _unit_rows(x, "x")
    if u.shape[0] < 2:
        raise ValueError("uniformity: need at least 2 rows")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, u.shape[0], n_pairs)
    j = (i + rng.integers(1, u.shape[0], n_pairs)) % u.shape[0]  # j != i always
    sq = np.clip(2.0 - 2.0 * np.einsum("ij,ij->i", u[i], u[j]), 0.0, None)
    # log-mean-exp, stabilised
    a = -t * sq
    amax = a.max()
    return float(amax + np.log(np.exp(a - amax).mean()))
