"""Next-embedding training sequences: windows of ``context`` chunks + the next chunk, never across articles.

A sequence is identified by its *target row* ``t`` in an :class:`~reprolab.data.corpus.EmbeddedCorpus`; its
context is rows ``t-context .. t-1`` of the same article. Splits are by article (``split_articles``): the
reference split stride-1 windows at random, so a validation window shared 5 of its 6 vectors with training
windows (DESIGN.md section 4, flaw c).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reprolab.data.corpus import EmbeddedCorpus, concat_corpora, load_embedded_corpus

__all__ = [
    "FIXTURE_DIR",
    "SequenceSet",
    "load_lvm_fixture",
    "make_windows",
    "split_articles",
]

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "lvm"


def make_windows(article_ids: np.ndarray, context: int, *, name: str = "corpus") -> np.ndarray:
    """Target rows of every stride-1 window of ``context + 1`` chunks inside one article."""
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    a = np.asarray(article_ids)
    n = a.size
    if n <= context:
        raise ValueError(f"{name}: {n} chunks, shorter than the context ({context}) + 1")
    t = np.arange(context, n)
    ok = a[t - context] == a[t]  # articles are contiguous runs, so equal ends mean one article
    targets = t[ok]
    if targets.size == 0:
        raise ValueError(f"{name}: no article has more than context={context} chunks; no sequence can be formed")
    return targets


@dataclass(frozen=True)
class SequenceSet:
    """Windows over a corpus: ``targets`` are row indices; contexts are the ``context`` rows before each."""

    corpus: EmbeddedCorpus
    targets: np.ndarray
    context: int

    def __len__(self) -> int:
        return int(self.targets.size)

    @classmethod
    def from_corpus(cls, corpus: EmbeddedCorpus, context: int, articles: Sequence[int] | None = None) -> SequenceSet:
        targets = make_windows(corpus.article_ids, context, name=corpus.name)
        if articles is not None:
            targets = targets[np.isin(corpus.article_ids[targets], np.asarray(list(articles)))]
        return cls(corpus, targets, context)

    def subset(self, mask: np.ndarray) -> SequenceSet:
        return SequenceSet(self.corpus, self.targets[np.asarray(mask, dtype=bool)], self.context)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(contexts (n, context, d), targets (n, d))`` as float32 copies."""
        if self.targets.size == 0:
            raise ValueError(f"{self.corpus.name}: empty sequence set")
        idx = self.targets[:, None] + np.arange(-self.context, 0)
        v = self.corpus.vectors
        return np.ascontiguousarray(v[idx], dtype=np.float32), np.ascontiguousarray(v[self.targets], dtype=np.float32)

    def article_ids(self) -> np.ndarray:
        return self.corpus.article_ids[self.targets]


def split_articles(
    articles: Sequence[int] | np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Shuffle the distinct ``articles`` with ``seed`` and cut them by ``fractions`` (normalised to 1).

    Every part gets at least one article when there are enough; the parts are disjoint by construction.
    """
    ids = np.unique(np.asarray(articles))
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0 or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"fractions must be non-negative with a positive sum, got {list(fractions)}")
    if ids.size < fr.size:
        raise ValueError(f"cannot split {ids.size} articles into {fr.size} non-empty parts")
    perm = np.random.default_rng(seed).permutation(ids)
    cuts = np.round(np.cumsum(fr / fr.sum()) * ids.size).astype(int)
    cuts = np.maximum(cuts, np.arange(1, fr.size + 1))  # at least one article each
    cuts = np.minimum(cuts, ids.size - np.arange(fr.size - 1, -1, -1))
    cuts[-1] = ids.size
    return [np.sort(p) for p in np.split(perm, cuts[:-1])]


def load_lvm_fixture(variant: str = "clean", root: str | Path | None = None) -> EmbeddedCorpus:
    """The committed MiniLM pydoc fixture: ``clean``, ``dilution`` (the extra articles only) or ``diluted``
    (clean followed by dilution, the way note 003's 790k set is the 584k articles plus newer ones)."""
    base = Path(root) if root is not None else FIXTURE_DIR
    if variant not in ("clean", "dilution", "diluted"):
        raise ValueError(f"unknown fixture variant {variant!r}; use 'clean', 'dilution' or 'diluted'")
    clean = load_embedded_corpus(base / "pydoc_minilm_clean.npz", name="pydoc_minilm_clean")
    if variant == "clean":
        return clean
    dilution = load_embedded_corpus(base / "pydoc_minilm_dilution.npz", name="pydoc_minilm_dilution")
    if variant == "dilution":
        return dilution
    return concat_corpora([clean, dilution], name="pydoc_minilm_diluted")
