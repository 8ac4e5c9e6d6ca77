"""Stand-in GTR-T5 folder: ``clean.npz`` and ``diluted.npz`` with ``vectors`` (float32, unit norm, 768-d) and
``article_ids`` (int64, contiguous runs), the layout ``reprolab.data.corpus.load_embedded_corpus`` reads.

Sizes are counted in *sequences* (context-5 windows inside articles, as ``SequenceSet.from_corpus`` makes
them): full scale has the notes' 543,773 (clean) and 726,014 (diluted) sequences. Vectors drift along an
article (a random walk around the article's topic), so coherence statistics are finite and non-trivial; the
diluted set mixes in short incoherent articles. Written in chunks of articles: memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from reprolab.rehearse.npzstream import write_npz_streamed

DIM = 768
CONTEXT = 5  # the claims' context (lvm experiments' default)
SEQUENCES = {"smoke": {"clean": 2400, "diluted": 3200}, "full": {"clean": 543_773, "diluted": 726_014}}
_WINDOWS_PER_ARTICLE = {"clean": 40, "diluted": 25}


def _article_lengths(n_sequences: int, per_article: int) -> list[int]:
    """Vectors per article so that the windows sum to exactly ``n_sequences``."""
    full, rest = divmod(n_sequences, per_article)
    windows = [per_article] * full + ([rest] if rest else [])
    return [w + CONTEXT for w in windows]


def _chunks(
    lengths: list[int], rng: np.random.Generator, noisy: bool, per_chunk: int
) -> Iterator[np.ndarray]:
    for start in range(0, len(lengths), per_chunk):
        block = []
        for i, n in enumerate(lengths[start : start + per_chunk]):
            topic = rng.standard_normal(DIM)
            step = (
                0.9 if noisy and (start + i) % 3 == 0 else 0.35
            )  # every third diluted article is incoherent
            walk = (
                topic
                + step
                * np.cumsum(rng.standard_normal((n, DIM)), axis=0)
                / np.sqrt(np.arange(1, n + 1))[:, None]
            )
            block.append(walk)
        v = np.concatenate(block).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        yield v


def write_gtr(root: Path, scale: str, seed: int = 0, *, articles_per_chunk: int = 500) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for offset, name in enumerate(("clean", "diluted")):
        lengths = _article_lengths(SEQUENCES[scale][name], _WINDOWS_PER_ARTICLE[name])
        n = sum(lengths)
        first_id = 0 if name == "clean" else 10_000_000  # the two corpora never share an article id
        ids = np.repeat(np.arange(first_id, first_id + len(lengths), dtype=np.int64), lengths)
        rng = np.random.default_rng([seed, offset])
        write_npz_streamed(
            root / f"{name}.npz",
            {
                "vectors": (
                    (n, DIM),
                    np.float32,
                    _chunks(lengths, rng, name == "diluted", articles_per_chunk),
                ),
                "article_ids": ((n,), np.int64, [ids]),
            },
        )
    return root
