"""Index-based windows (``SequenceSet.gather``): never across articles, equal to the old materialised windows,
working on an ``np.memmap``; the trainer and baselines give the same numbers from the index as from arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reprolab.data.corpus import EmbeddedCorpus
from reprolab.data.sequences import ArrayWindows, SequenceSet, iter_batches, load_lvm_fixture, split_articles
from reprolab.models.lvm.baselines import baseline_scores
from reprolab.models.lvm.trainer import TrainConfig, evaluate, fit, predict, seeded_model

KW = {"attn_dim": 8, "hidden": (16, 8)}


def _materialised(s: SequenceSet) -> tuple[np.ndarray, np.ndarray]:
    """What ``SequenceSet.arrays()`` used to return: every window copied out, written independently here."""
    v = s.corpus.vectors
    ctx = np.stack([v[t - s.context : t] for t in s.targets]).astype(np.float32)
    return ctx, np.asarray(v[s.targets], dtype=np.float32)


def _corpus(lengths: list[int], d: int = 6, seed: int = 0) -> EmbeddedCorpus:
    ids = np.repeat(np.arange(len(lengths)) * 10 + 3, lengths)  # non-consecutive ids on purpose
    v = np.random.default_rng(seed).standard_normal((ids.size, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return EmbeddedCorpus(v, ids, name="toy")


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=8), context=st.integers(1, 5),
       seed=st.integers(0, 50))
def test_gathered_windows_never_cross_articles(lengths, context, seed):
    if max(lengths) <= context:
        return  # no window at all: make_windows raises (tested in test_lvm_corpus)
    c = _corpus(lengths)
    # label every row by its article so a gathered window tells which articles it read
    c = EmbeddedCorpus(np.repeat(c.article_ids[:, None].astype(np.float32), 2, axis=1), c.article_ids, name="ids")
    s = SequenceSet.from_corpus(c, context)
    assert len(s) == sum(max(0, n - context) for n in lengths)
    ctx, tgt = s.gather(np.random.default_rng(seed).permutation(len(s)))
    assert (ctx == tgt[:, None, :]).all()  # every context row is in its target's article
    assert np.array_equal(s.starts, s.targets - context)
    # article-disjoint subsets (the split semantics): each window lies wholly inside one chosen article
    articles = np.unique(c.article_ids)
    if articles.size >= 2:
        part = split_articles(articles, (0.5, 0.5), seed)[0]
        sub = SequenceSet.from_corpus(c, context, part)
        if len(sub):
            sctx, stgt = sub.gather()
            assert np.isin(stgt[:, 0], part).all() and (sctx == stgt[:, None, :]).all()


def test_gather_equals_old_materialised_windows_on_fixture():
    corpus = load_lvm_fixture("diluted")
    s = SequenceSet.from_corpus(corpus, 5)
    old_ctx, old_tgt = _materialised(s)
    order = np.random.default_rng(0).permutation(len(s))
    for i in range(0, 1500, 512):  # shuffled batches, as the trainer draws them
        ctx, tgt = s.gather(order[i : i + 512])
        assert ctx.dtype == np.float32 and ctx.flags.c_contiguous and tgt.flags.c_contiguous
        np.testing.assert_array_equal(ctx, old_ctx[order[i : i + 512]])
        np.testing.assert_array_equal(tgt, old_tgt[order[i : i + 512]])
    batches = list(iter_batches(s, 300))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), old_ctx)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), old_tgt)
    np.testing.assert_array_equal(s.target_vectors(), old_tgt)
    np.testing.assert_allclose(s.target_mean(), old_tgt.astype(np.float64).mean(axis=0), rtol=0, atol=1e-12)


@pytest.fixture
def memmap_corpus(tmp_path):
    """The clean fixture with its vectors in an ``.npy`` opened with ``mmap_mode='r'``."""
    clean = load_lvm_fixture("clean")
    np.save(tmp_path / "vectors.npy", clean.vectors)
    mm = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap)
    return clean, EmbeddedCorpus(mm, clean.article_ids, name="mm")


def test_loader_works_on_memmap(memmap_corpus):
    clean, mm = memmap_corpus
    a, b = SequenceSet.from_corpus(clean, 5), SequenceSet.from_corpus(mm, 5)
    pos = np.random.default_rng(1).permutation(len(a))[:700]
    (ca, ta), (cb, tb) = a.gather(pos), b.gather(pos)
    assert type(cb) is np.ndarray and type(tb) is np.ndarray  # plain copies, not views of the file
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(ta, tb)
    b.require_finite("mm")


def test_training_on_memmap_equals_training_on_materialised_arrays(memmap_corpus):
    """Same batch order -> bit-identical weights, whether windows are gathered from a memmap or were copied out."""
    clean, mm = memmap_corpus
    tr_art, va_art = split_articles(np.unique(clean.article_ids), (0.8, 0.2), 0)
    train, val = SequenceSet.from_corpus(mm, 5, tr_art), SequenceSet.from_corpus(mm, 5, va_art)
    cfg = TrainConfig(epochs=2, batch_size=64)
    with torch.random.fork_rng(devices=[]):
        a = fit(seeded_model("amn", 384, 0, **KW), train, val, cfg, 0)
        b = fit(seeded_model("amn", 384, 0, **KW), ArrayWindows(*_materialised(train)),
                ArrayWindows(*_materialised(val)), cfg, 0)
    for (k, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(wa, wb), k
    assert [r.val_cosine for r in a.history] == [r.val_cosine for r in b.history]
    xv, yv = _materialised(val)
    assert evaluate(a.model, val) == evaluate(a.model, xv, yv)
    np.testing.assert_array_equal(predict(a.model, val)[1], predict(a.model, xv)[1])
    s_idx = baseline_scores(val, train, seed=3, batch_size=100)  # several batches: the random stream continues
    s_arr = baseline_scores((xv, yv), _materialised(train)[1], seed=3)
    assert s_idx == pytest.approx(s_arr, rel=0, abs=1e-12)


def test_gather_bad_input():
    s = SequenceSet.from_corpus(_corpus([8, 3, 7]), 2)
    with pytest.raises(TypeError, match="toy: positions"):
        s.gather(np.array([0.5]))
    with pytest.raises(IndexError, match="toy: positions out of range"):
        s.gather(np.array([len(s)]))
    with pytest.raises(ValueError, match="no windows"):
        s.gather(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(s, 0))


def test_require_finite_names_the_row_and_ignores_unused_articles():
    c = _corpus([8, 3, 7])
    v = c.vectors.copy()
    v[9, 1] = np.nan  # article 2 (3 rows) gives no window at context 3
    bad = EmbeddedCorpus(v, c.article_ids, name="toy")
    SequenceSet.from_corpus(bad, 3).require_finite("train")
    v[13, 0] = np.inf
    with pytest.raises(ValueError, match="train: toy row 13 contains NaN or inf"):
        SequenceSet.from_corpus(EmbeddedCorpus(v, c.article_ids, name="toy"), 3).require_finite("train")
    model = seeded_model("amn", 6, 0, attn_dim=4, hidden=(8, 4))
    good = SequenceSet.from_corpus(c, 3)
    with pytest.raises(ValueError, match="row 13"):
        fit(model, SequenceSet.from_corpus(EmbeddedCorpus(v, c.article_ids, name="toy"), 3), good,
            TrainConfig(epochs=1), 0)
    zero = c.vectors.copy()
    zero[7] = 0.0  # the last row of article 0: a target
    with pytest.raises(ValueError, match="not finite"):
        evaluate(model, SequenceSet.from_corpus(EmbeddedCorpus(zero, c.article_ids), 3))


def test_mapped_pages_released_only_for_read_only_memmaps(memmap_corpus, tmp_path):
    clean, mm = memmap_corpus
    ref = SequenceSet.from_corpus(clean, 5)
    tiny = SequenceSet(mm, ref.targets, 5, mapped_budget=1)  # release after every batch
    assert tiny._pages.mm is not None
    for ctx, _ in tiny.batches(100, np.random.default_rng(2).permutation(len(tiny))[:400]):
        assert np.isfinite(ctx).all()
    np.testing.assert_array_equal(tiny.gather()[0], ref.gather()[0])  # released pages are read back intact
    cow = np.load(tmp_path / "vectors.npy", mmap_mode="c")  # copy-on-write: releasing would drop edits
    assert SequenceSet(EmbeddedCorpus(cow, clean.article_ids), ref.targets, 5)._pages.mm is None
    assert ref._pages.mm is None  # in-memory vectors: nothing to release
