"""The regime the note assumes: models start at mean-of-context, batches rarely hold same-article pairs, and the
docstring fixture is what its provenance says (issue 9, item 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reprolab.data.corpus import (
    EmbeddedCorpus,
    dequantise_rows_int8,
    load_embedded_corpus,
    quantise_rows_int8,
    save_embedded_corpus,
)
from reprolab.data.sequences import FIXTURE_DIR, SequenceSet, load_lvm_fixture
from reprolab.experiments.lvm import same_article_pairs_per_batch
from reprolab.models.lvm.models import build_model
from reprolab.models.lvm.trainer import TrainConfig

SMALL = {
    "lstm": {"hidden": 16, "mean_skip": True},
    "gru": {"hidden": 16, "blocks": 2, "mean_skip": True},
    "transformer": {"d_model": 16, "heads": 4, "layers": 2, "mean_skip": True},
}


def _moc(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.mean(1), dim=-1)


def test_untrained_amn_is_mean_of_context_by_default():
    torch.manual_seed(0)
    model = build_model("amn", 24, attn_dim=8, hidden=(16, 8))
    x = torch.randn(4, 5, 24)
    out = model(x)
    assert torch.equal(out.raw, x.mean(1))
    assert torch.allclose(out.normalized, _moc(x), atol=1e-6)


def test_reference_init_keeps_a_large_residual():
    """PyTorch's default init (the reference's) gives a residual far larger than the context mean."""
    torch.manual_seed(0)
    model = build_model("amn", 384, residual_init="default")
    x = torch.nn.functional.normalize(torch.randn(64, 5, 384), dim=-1)
    residual = (model(x).raw - x.mean(1)).norm(dim=-1).mean()
    assert residual > 5 * x.mean(1).norm(dim=-1).mean()


def test_amn_rejects_unknown_init():
    with pytest.raises(ValueError, match="residual_init"):
        build_model("amn", 8, residual_init="xavier")


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_mean_skip_models_start_at_mean_of_context(kind):
    torch.manual_seed(0)
    model = build_model(kind, 12, **SMALL[kind]).eval()
    x = torch.randn(3, 5, 12)
    assert torch.allclose(model(x).normalized, _moc(x), atol=1e-6)


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_without_mean_skip_models_are_not_mean_of_context(kind):
    torch.manual_seed(0)
    kwargs = {k: v for k, v in SMALL[kind].items() if k != "mean_skip"}
    model = build_model(kind, 12, **kwargs).eval()
    x = torch.randn(3, 5, 12)
    assert not torch.allclose(model(x).normalized, _moc(x), atol=1e-3)


def test_same_article_pairs_formula_matches_simulation():
    articles = np.repeat(np.arange(6), [1, 2, 3, 5, 8, 13])
    rng = np.random.default_rng(0)
    sims = []
    for _ in range(4000):
        batch = rng.permutation(articles)[:8]
        _, c = np.unique(batch, return_counts=True)
        sims.append((c * (c - 1) / 2).sum())
    assert same_article_pairs_per_batch(articles, 8) == pytest.approx(np.mean(sims), rel=0.05)
    assert same_article_pairs_per_batch(np.arange(100), 32) == 0.0  # one window per article


def test_int8_rows_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((50, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    back = dequantise_rows_int8(*quantise_rows_int8(v))
    assert np.einsum("ij,ij->i", back, v).min() > 0.9999
    corpus = EmbeddedCorpus(v, np.repeat(np.arange(5), 10), name="q")
    save_embedded_corpus(corpus, tmp_path / "q.npz", quantise_int8=True)
    loaded = load_embedded_corpus(tmp_path / "q.npz")
    assert loaded.vectors.dtype == np.float32
    np.testing.assert_allclose(loaded.vectors, back, atol=1e-7)


def test_int8_mismatched_scale_is_a_clear_error():
    with pytest.raises(ValueError, match="vector_scale"):
        dequantise_rows_int8(np.zeros((3, 4), np.int8), np.ones(2, np.float32))


def test_grad_clip_must_be_positive():
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(grad_clip=0.0)


def test_docstring_fixture_matches_its_provenance():
    prov = json.loads((FIXTURE_DIR / "PROVENANCE_docstrings.json").read_text())
    clean = load_lvm_fixture("clean", corpus="docstrings")
    diluted = load_lvm_fixture("diluted", corpus="docstrings")
    assert np.unique(clean.article_ids).size == prov["clean"]["articles"]
    assert len(clean) == prov["clean"]["chunks"]
    assert len(diluted) == prov["clean"]["chunks"] + prov["dilution"]["chunks"]
    seqs = SequenceSet.from_corpus(diluted, 5)
    assert len(seqs) == prov["clean"]["sequences"] + prov["dilution"]["sequences"]
    np.testing.assert_allclose(np.linalg.norm(clean.vectors, axis=1), 1.0, atol=1e-5)
    assert prov["quantisation_worst_cosine"] > 0.9999
    # the regime: far below one same-article pair per batch of 32 (the pydoc fixture: 15-28)
    assert same_article_pairs_per_batch(seqs.article_ids(), 32) < 0.1
