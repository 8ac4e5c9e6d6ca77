"""The lvm experiments' config handling and the gpu tier's data path (REPROLAB_LVM_GTR_DIR), on tiny data."""

from __future__ import annotations

import numpy as np
import pytest

from reprolab.data.corpus import EmbeddedCorpus, save_embedded_corpus
from reprolab.experiments.registry import get_experiment


def _walk(n: int, d: int, step: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.cumsum(step * rng.standard_normal((n, d)), axis=0) + rng.standard_normal(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def gtr_dir(tmp_path, monkeypatch):
    """A miniature clean.npz / diluted.npz pair in the documented format."""
    clean_ids = np.repeat(np.arange(12), 10)
    clean = EmbeddedCorpus(_walk(120, 16, 0.3, 0), clean_ids, titles={i: f"Topic {i}" for i in range(12)})
    extra = EmbeddedCorpus(_walk(40, 16, 3.0, 1), np.repeat(np.arange(100, 104), 10),
                           titles={100: "List of things", 101: "Category:Stuff", 102: "Misc", 103: "Misc 2"})
    diluted = EmbeddedCorpus(np.concatenate([clean.vectors, extra.vectors]),
                             np.concatenate([clean.article_ids, extra.article_ids]),
                             titles={**clean.titles, **extra.titles})
    save_embedded_corpus(clean, tmp_path / "clean.npz")
    save_embedded_corpus(diluted, tmp_path / "diluted.npz")
    monkeypatch.setenv("REPROLAB_TEST_GTR", str(tmp_path))
    return tmp_path


def test_data_diagnostics_reads_env_directory(gtr_dir):
    r = get_experiment("lvm.data_diagnostics")({"data": "env", "env": "REPROLAB_TEST_GTR", "n_queries": 50}, 0)
    assert r["norm_ok"] == 1.0 and r["recall_at_5"] == 1.0
    assert r["drift_mean_rel"] < 0 and r["filter_n_blocklisted"] > 0
    assert all(np.isfinite(v) for v in r.values())


def test_train_reads_env_directory_and_reports_baselines(gtr_dir):
    config = {"data": "env", "env": "REPROLAB_TEST_GTR", "train_set": "filtered", "epochs": 1, "batch_size": 8,
              "model_kwargs": {"attn_dim": 8, "hidden": [16, 8]}, "min_score": 0.0}
    r = get_experiment("lvm.train")(config, 0)
    assert set(r) == set(get_experiment("lvm.train").metrics)
    assert r["ood_margin_over_moc"] == pytest.approx(r["ood_cosine"] - r["ood_mean_of_context"])
    assert 0 < r["kept_fraction"] <= 1


def test_bad_configs_raise_naming_the_key(monkeypatch):
    train = get_experiment("lvm.train")
    with pytest.raises(ValueError, match="train_set"):
        train({"train_set": "noisy"}, 0)
    with pytest.raises(ValueError, match="'data'"):
        train({"data": "web", "train_set": "clean"}, 0)
    monkeypatch.delenv("REPROLAB_UNSET_DIR", raising=False)
    with pytest.raises(ValueError, match="REPROLAB_UNSET_DIR is not set"):
        get_experiment("lvm.data_diagnostics")({"data": "env", "env": "REPROLAB_UNSET_DIR"}, 0)
    with pytest.raises(ValueError, match="scope"):
        get_experiment("lvm.data_diagnostics")({"scope": "global"}, 0)


def test_untrained_amn_scores_mean_of_context_everywhere(gtr_dir):
    """With a vanishing learning rate the zero-initialised AMN stays at mean-of-context: every margin is ~0,
    so a positive train margin after training is something the model learned."""
    config = {"data": "env", "env": "REPROLAB_TEST_GTR", "train_set": "diluted", "epochs": 1, "batch_size": 8,
              "lr": 1e-12, "model_kwargs": {"attn_dim": 8, "hidden": [16, 8]}}
    r = get_experiment("lvm.train")(config, 0)
    for split in ("train", "val", "ood", "val_common"):
        assert abs(r[f"{split}_margin_over_moc"]) < 1e-5, split
    assert r["val_common_cosine"] == pytest.approx(r["val_cosine"])  # diluted arm: its val set is the common one
    # 10-chunk articles give 5 windows each: many same-article pairs in a batch of 8
    assert r["same_article_pairs_per_batch"] > 0.5


def test_fixture_key_is_checked():
    with pytest.raises(ValueError, match="'fixture'"):
        get_experiment("lvm.train")({"data": "fixture", "fixture": "wiki", "train_set": "clean"}, 0)
