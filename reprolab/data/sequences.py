"""Next-embedding training sequences: windows of ``context`` chunks + the next chunk, never across articles.

A sequence is identified by its *target row* ``t`` in an :class:`~reprolab.data.corpus.EmbeddedCorpus`; its
context is rows ``t-context .. t-1`` of the same article. A :class:`SequenceSet` holds only that int index and
gathers each batch's windows from the corpus vectors on the fly (which may be an ``np.memmap``), so training
memory does not grow with the number of windows. Splits are by article (``split_articles``): the
reference split stride-1 windows at random, so a validation window shared 5 of its 6 vectors with training
windows (DESIGN.md section 4, flaw c).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from reprolab.data.corpus import EmbeddedCorpus, concat_corpora, load_embedded_corpus
from reprolab.validation import check_int

__all__ = [
    "FIXTURE_CORPORA",
    "FIXTURE_DIR",
    "ArrayWindows",
    "SequenceSet",
    "Windows",
    "as_windows",
    "iter_batches",
    "load_lvm_fixture",
    "make_windows",
    "split_articles",
]

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "lvm"


def make_windows(article_ids: np.ndarray, context: int, *, name: str = "corpus") -> np.ndarray:
    """Target rows of every stride-1 window of ``context + 1`` chunks inside one article."""
    check_int("context", context, minimum=1)
    a = np.asarray(article_ids)
    if a.ndim != 1:
        raise ValueError(f"{name}: article_ids must be 1-D (one id per chunk), got shape {a.shape}")
    n = a.size
    if n <= context:
        raise ValueError(f"{name}: {n} chunks, shorter than the context ({context}) + 1")
    t = np.arange(context, n)
    ok = a[t - context] == a[t]  # articles are contiguous runs, so equal ends mean one article
    targets = t[ok]
    if targets.size == 0:
        raise ValueError(f"{name}: no article has more than context={context} chunks; no sequence can be formed")
    return targets


@runtime_checkable
class Windows(Protocol):
    """What the trainer, ``predict``/``evaluate`` and the baselines read: ``len`` windows of ``dim``-d vectors,
    gathered a batch at a time. :class:`SequenceSet` (index-based, for any corpus size) and
    :class:`ArrayWindows` (already materialised arrays, for small data) implement it."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def gather(self, positions: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]: ...

    def require_finite(self, name: str) -> None: ...

    def target_mean(self) -> np.ndarray: ...


class _MappedPages:
    """Keeps a read-only ``np.memmap``'s resident set bounded: after ``budget`` bytes of windows have been
    gathered, the process's mapping of the file's pages is dropped (``madvise(MADV_DONTNEED)``).

    Why: Linux counts every mapped file page in the process's RSS, so one shuffled pass over a 2.2 GB memmap
    ends with ~2.2 GB "resident" although the process allocated ~45 MB (the pages are clean page cache the
    kernel may reclaim anyway). Dropping the mapping leaves the data in the page cache (the next read is a
    minor fault, not disk I/O) and is only done for mode ``'r'``: a copy-on-write mapping would lose edits.
    """

    def __init__(self, array: np.ndarray, budget: int) -> None:
        self.mm: mmap.mmap | None = None
        a: object = array
        while isinstance(a, np.ndarray):
            if isinstance(a, np.memmap) and a.mode == "r" and isinstance(a.base, mmap.mmap):
                self.mm = a.base
                break
            a = a.base
        self.budget, self.used = budget, 0

    def touched(self, nbytes: int) -> None:
        if self.mm is None:
            return
        self.used += nbytes
        if self.used >= self.budget:
            self.mm.madvise(mmap.MADV_DONTNEED)
            self.used = 0


def _positions(positions: np.ndarray | slice, n: int, name: str) -> np.ndarray | slice:
    if isinstance(positions, slice):
        return positions
    p = np.asarray(positions)
    if p.ndim != 1 or not np.issubdtype(p.dtype, np.integer):
        raise TypeError(f"{name}: positions must be a 1-D integer array, got {p.dtype} {p.shape}")
    if p.size and (p.min() < -n or p.max() >= n):
        raise IndexError(f"{name}: positions out of range for {n} windows")
    return p


@dataclass(frozen=True)
class SequenceSet:
    """Windows over a corpus, kept as an index only: ``targets[i]`` is the row of window ``i``'s target; its
    context is rows ``targets[i] - context .. targets[i] - 1`` (the window starts at :attr:`starts`).

    Nothing is materialised: :meth:`gather` copies one batch of windows out of ``corpus.vectors`` with one
    vectorised fancy index, so ``corpus.vectors`` may be an ``np.memmap`` (``np.load(..., mmap_mode="r")``)
    larger than memory. Memory is ``8 x len`` bytes for the index plus one batch.
    """

    corpus: EmbeddedCorpus
    targets: np.ndarray
    context: int
    mapped_budget: int = 64 * 2**20
    """bytes of windows gathered from a read-only memmap before its mapped pages are released (see
    :class:`_MappedPages`). It bounds RSS, not correctness; the kernel maps pages around each fault, so the
    mapped set peaks at a few times this."""
    _pages: _MappedPages = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pages", _MappedPages(self.corpus.vectors, self.mapped_budget))

    def __len__(self) -> int:
        return int(self.targets.size)

    @property
    def dim(self) -> int:
        return self.corpus.dim

    @property
    def starts(self) -> np.ndarray:
        """First row of each window (its first context vector)."""
        return self.targets - self.context

    @classmethod
    def from_corpus(cls, corpus: EmbeddedCorpus, context: int, articles: Sequence[int] | None = None) -> SequenceSet:
        targets = make_windows(corpus.article_ids, context, name=corpus.name)
        if articles is not None:
            targets = targets[np.isin(corpus.article_ids[targets], np.asarray(list(articles)))]
        return cls(corpus, targets, context)

    def subset(self, mask: np.ndarray) -> SequenceSet:
        return SequenceSet(self.corpus, self.targets[np.asarray(mask, dtype=bool)], self.context, self.mapped_budget)

    def gather(self, positions: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """``(contexts (b, context, d), targets (b, d))`` float32 of the windows at ``positions`` (indices into
        this set, in that order). One fancy index reads each window's ``context + 1`` consecutive rows."""
        t = self.targets[_positions(positions, len(self), self.corpus.name)]
        if t.size == 0:
            raise ValueError(f"{self.corpus.name}: no windows to gather (empty sequence set or positions)")
        rows = t[:, None] + np.arange(-self.context, 1)  # (b, context + 1), the target last
        block = np.asarray(self.corpus.vectors[rows], dtype=np.float32)
        self._pages.touched(block.nbytes)
        return np.ascontiguousarray(block[:, :-1]), np.ascontiguousarray(block[:, -1])

    def target_vectors(self) -> np.ndarray:
        """The targets alone, ``(n, d)`` float32 (a sixth of the windows' size at context 5)."""
        return np.asarray(self.corpus.vectors[self.targets], dtype=np.float32)

    def batches(self, batch_size: int, order: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Gathered batches in ``order`` (default: the set's own order); the last one may be smaller."""
        return iter_batches(self, batch_size, order)

    def _used_rows(self) -> np.ndarray:
        used = np.zeros(len(self.corpus), dtype=bool)
        for k in range(self.context + 1):
            used[self.targets - k] = True
        return np.flatnonzero(used)

    def require_finite(self, name: str, *, chunk_rows: int = 65_536) -> None:
        """Raise ``ValueError`` naming the first corpus row any window reads that holds NaN or inf.

        Streams over the rows the windows use (sorted, ``chunk_rows`` at a time), so a memmap is never loaded
        whole and a bad row in an article this set does not use is not its concern."""
        rows = self._used_rows()
        v = self.corpus.vectors
        for i in range(0, rows.size, chunk_rows):
            r = rows[i : i + chunk_rows]
            bad = ~np.isfinite(np.asarray(v[r])).all(axis=1)
            if bad.any():
                raise ValueError(f"{name}: {self.corpus.name} row {int(r[bad][0])} contains NaN or inf")

    def target_mean(self, *, chunk_rows: int = 65_536) -> np.ndarray:
        """Mean target vector (float64 accumulation, streamed)."""
        if self.targets.size == 0:
            raise ValueError(f"{self.corpus.name}: empty sequence set")
        acc = np.zeros(self.dim)
        for i in range(0, self.targets.size, chunk_rows):
            acc += np.asarray(self.corpus.vectors[self.targets[i : i + chunk_rows]]).sum(axis=0, dtype=np.float64)
        return acc / self.targets.size

    def article_ids(self) -> np.ndarray:
        return self.corpus.article_ids[self.targets]


@dataclass(frozen=True)
class ArrayWindows:
    """Windows that already exist as arrays (small synthetic data, tests): the :class:`Windows` interface over
    ``contexts (n, T, d)`` and ``targets (n, d)``."""

    contexts: np.ndarray
    targets: np.ndarray
    name: str = "windows"

    def __post_init__(self) -> None:
        c, t = np.asarray(self.contexts), np.asarray(self.targets)
        if c.ndim != 3 or t.ndim != 2 or c.shape[0] != t.shape[0] or c.shape[-1] != t.shape[-1]:
            raise ValueError(f"{self.name}: contexts {c.shape} and targets {t.shape} do not match")

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def dim(self) -> int:
        return int(self.targets.shape[1])

    def gather(self, positions: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        p = _positions(positions, len(self), self.name)
        c, t = np.asarray(self.contexts[p], dtype=np.float32), np.asarray(self.targets[p], dtype=np.float32)
        if t.shape[0] == 0:
            raise ValueError(f"{self.name}: no windows to gather")
        return np.ascontiguousarray(c), np.ascontiguousarray(t)

    def require_finite(self, name: str) -> None:
        for part, arr in (("contexts", self.contexts), ("targets", self.targets)):
            if not np.isfinite(arr).all():
                raise ValueError(f"{name}_{part} contains NaN or inf")

    def target_mean(self) -> np.ndarray:
        return np.asarray(self.targets).mean(axis=0, dtype=np.float64)


def as_windows(data: Windows | tuple[np.ndarray, np.ndarray], name: str = "windows") -> Windows:
    """``data`` itself when it is :class:`Windows`, else an :class:`ArrayWindows` over a ``(contexts, targets)``
    pair; no windows at all is a ``ValueError`` naming ``name``."""
    if isinstance(data, Windows):
        w = data
    elif isinstance(data, tuple) and len(data) == 2:
        w = ArrayWindows(np.asarray(data[0]), np.asarray(data[1]), name=name)
    else:
        raise TypeError(f"{name}: expected a SequenceSet, ArrayWindows or (contexts, targets) pair, got {type(data)!r}")
    if len(w) == 0:  # a mean over no windows is a silent NaN
        raise ValueError(f"{name}: no windows (empty)")
    return w


def iter_batches(
    windows: Windows, batch_size: int, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Gather ``windows`` a batch at a time in ``order`` (default ``0..n-1``); memory is one batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(windows)
    if order is None:
        for i in range(0, n, batch_size):
            yield windows.gather(slice(i, min(i + batch_size, n)))
        return
    for i in range(0, len(order), batch_size):
        yield windows.gather(order[i : i + batch_size])


def split_articles(
    articles: Sequence[int] | np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Shuffle the distinct ``articles`` with ``seed`` and cut them by ``fractions`` (normalised to 1).

    Every part gets at least one article when there are enough; the parts are disjoint by construction.
    """
    ids = np.unique(np.asarray(articles))
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0 or not np.isfinite(fr).all() or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"fractions must be finite, non-negative with a positive sum, got {list(fractions)}")
    if ids.size < fr.size:
        raise ValueError(f"cannot split {ids.size} articles into {fr.size} non-empty parts")
    perm = np.random.default_rng(seed).permutation(ids)
    cuts = np.round(np.cumsum(fr / fr.sum()) * ids.size).astype(int)
    cuts = np.maximum(cuts, np.arange(1, fr.size + 1))  # at least one article each
    cuts = np.minimum(cuts, ids.size - np.arange(fr.size - 1, -1, -1))
    cuts[-1] = ids.size
    return [np.sort(p) for p in np.split(perm, cuts[:-1])]


FIXTURE_CORPORA = ("pydoc", "docstrings")


def load_lvm_fixture(
    variant: str = "clean", root: str | Path | None = None, *, corpus: str = "pydoc"
) -> EmbeddedCorpus:
    """A committed MiniLM fixture: ``clean``, ``dilution`` (the extra articles only) or ``diluted`` (clean
    followed by dilution, the way note 003's 790k set is the 584k articles plus newer ones).

    ``corpus``: ``pydoc`` (CPython's topic docs: 117 long articles; the diagnostics' corpus) or ``docstrings``
    (1,430 one-window articles from the docstrings on disk: the training claims' corpus, in the note's regime of
    rare same-article pairs per batch; see scripts/build_lvm_docstring_fixture.py).
    """
    base = Path(root) if root is not None else FIXTURE_DIR
    if variant not in ("clean", "dilution", "diluted"):
        raise ValueError(f"unknown fixture variant {variant!r}; use 'clean', 'dilution' or 'diluted'")
    if corpus not in FIXTURE_CORPORA:
        raise ValueError(f"unknown fixture corpus {corpus!r}; use one of {FIXTURE_CORPORA}")
    clean = load_embedded_corpus(base / f"{corpus}_minilm_clean.npz", name=f"{corpus}_minilm_clean")
    if variant == "clean":
        return clean
    dilution = load_embedded_corpus(base / f"{corpus}_minilm_dilution.npz", name=f"{corpus}_minilm_dilution")
    if variant == "dilution":
        return dilution
    return concat_corpora([clean, dilution], name=f"{corpus}_minilm_diluted")
