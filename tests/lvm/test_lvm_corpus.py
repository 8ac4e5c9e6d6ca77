"""Corpus chunking, the embedded-corpus file format, windows and article splits, and the committed fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reprolab.data.corpus import EmbeddedCorpus, chunk_paragraphs, load_embedded_corpus, save_embedded_corpus
from reprolab.data.sequences import FIXTURE_DIR, SequenceSet, load_lvm_fixture, make_windows, split_articles


def test_chunk_paragraphs_merges_short_and_splits_long():
    text = "Short.\n\nAlso short.\n\n" + " ".join(f"Sentence number {i} is here." for i in range(40))
    chunks = chunk_paragraphs(text, min_chars=30, max_chars=120)
    assert chunks[0].startswith("Short. Also short.")
    assert all(len(c) <= 120 + 30 for c in chunks)
    assert " ".join(chunks).split() == text.split()  # nothing lost, nothing invented


def test_chunk_paragraphs_rejects_bad_sizes():
    with pytest.raises(ValueError, match="min_chars"):
        chunk_paragraphs("x", min_chars=10, max_chars=5)


def test_corpus_roundtrip(tmp_path):
    v = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    c = EmbeddedCorpus(v, np.array([0, 0, 1, 1, 1]), ("a", "b", "ç", "d", "e"), {0: "A", 1: "List of B"})
    save_embedded_corpus(c, tmp_path / "c.npz")
    back = load_embedded_corpus(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.vectors, v)
    assert back.texts == c.texts and back.titles == c.titles


def test_corpus_rejects_non_contiguous_articles():
    with pytest.raises(ValueError, match="contiguous"):
        EmbeddedCorpus(np.zeros((3, 2), np.float32), np.array([0, 1, 0]))


def test_corpus_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="2-D"):
        EmbeddedCorpus(np.zeros(3, np.float32), np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="article_ids"):
        EmbeddedCorpus(np.zeros((3, 2), np.float32), np.array([0, 0]))


def test_load_names_missing_arrays(tmp_path):
    np.savez(tmp_path / "bad.npz", vectors=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"bad\.npz.*article_ids"):
        load_embedded_corpus(tmp_path / "bad.npz")


def test_windows_never_cross_articles():
    ids = np.array([0] * 7 + [1] * 3 + [2] * 6)
    t = make_windows(ids, 5)
    assert set(t.tolist()) == {5, 6, 15}
    for target in t:
        assert len(set(ids[target - 5 : target + 1])) == 1


def test_windows_shorter_than_context_raise():
    with pytest.raises(ValueError, match="context"):
        make_windows(np.array([0, 0, 1, 1]), 5)
    with pytest.raises(ValueError, match="no article has more than context"):
        make_windows(np.array([0, 0, 0, 1, 1, 1, 2, 2]), 5)


def test_split_articles_disjoint_and_seeded():
    parts = split_articles(np.arange(20), (0.7, 0.15, 0.15), seed=3)
    assert sum(p.size for p in parts) == 20
    assert len(np.unique(np.concatenate(parts))) == 20
    again = split_articles(np.arange(20), (0.7, 0.15, 0.15), seed=3)
    assert all((a == b).all() for a, b in zip(parts, again, strict=True))
    with pytest.raises(ValueError, match="cannot split"):
        split_articles([1, 2], (0.5, 0.3, 0.2), seed=0)


@pytest.mark.parametrize("fractions", [[np.nan, 1.0], [np.inf, 1.0], [0.5, -np.inf]])
def test_split_articles_refuses_non_finite_fractions(fractions):
    # NaN/inf fractions used to pass (numpy RuntimeWarnings) and cut at garbage positions.
    with pytest.raises(ValueError, match=r"fractions must be finite"):
        split_articles(np.arange(10), fractions, seed=0)


@pytest.mark.parametrize(("context", "error"), [(2.5, TypeError), ("2", TypeError), (True, TypeError), (0, ValueError)])
def test_make_windows_refuses_a_non_integer_context(context, error):
    # 2.5 used to fail with numpy's IndexError (arrays used as indices must be of integer type).
    with pytest.raises(error, match=r"context must be (an int|>= 1)"):
        make_windows(np.zeros(10, dtype=int), context)


def test_make_windows_refuses_2d_article_ids():
    # A 2-D article_ids used to fail with IndexError deep in the window test.
    with pytest.raises(ValueError, match=r"corpus: article_ids must be 1-D"):
        make_windows(np.zeros((5, 2), dtype=int), 2)


def test_fixture_matches_provenance():
    prov = json.loads((FIXTURE_DIR / "PROVENANCE.json").read_text())
    clean, diluted = load_lvm_fixture("clean"), load_lvm_fixture("diluted")
    assert clean.vectors.shape == (prov["clean"]["chunks"], 384)
    assert len(diluted) == prov["clean"]["chunks"] + prov["dilution"]["chunks"]
    assert len(SequenceSet.from_corpus(clean, 5)) == prov["clean"]["sequences"]
    assert clean.texts is not None and len(set(clean.texts)) == len(clean.texts)  # deduplicated chunks
    with pytest.raises(ValueError, match="variant"):
        load_lvm_fixture("noisy")
