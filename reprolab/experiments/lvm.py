"""Experiments of the next-embedding prediction line (notes 002 and 003).

- ``lvm.data_diagnostics``: no training. Norms, element statistics, oracle recall, coherence of a clean and a
  diluted corpus, their drift, and the quality filter's effect (note 003 P0/P1, note 002's data check).
- ``lvm.encoder_fingerprint``: the real MiniLM encoder's sha256 fingerprint in this process, again, and in a
  fresh interpreter; and the reference's salted ``hash()`` fingerprint across two interpreters.
- ``lvm.train``: one model trained on one training set (``clean``, ``diluted`` or ``filtered``), evaluated on
  its own validation articles and on held-out *clean* articles (OOD), beside the four baselines.

Data: ``data: fixture`` (default) reads the committed MiniLM pydoc fixture (``fixtures/lvm``); ``data: env``
reads ``$<env>/clean.npz`` and ``$<env>/diluted.npz`` (GTR-T5 Wikipedia vectors, see docs/lvm.md). Articles of
the diluted corpus that are not in the clean one are the *dilution*. Splits are by article and depend only on
``seed``, so every arm of one seed sees the same OOD articles.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from reprolab.data.corpus import EmbeddedCorpus, load_embedded_corpus
from reprolab.data.sequences import FIXTURE_CORPORA, SequenceSet, load_lvm_fixture, split_articles
from reprolab.diagnostics.coherence import (
    BLOCKLIST,
    coherence_drift,
    coherence_stats,
    consecutive_cosines,
    quality_filter,
    window_coherence,
)
from reprolab.diagnostics.embeddings import collapse_metrics, element_stats, encoder_fingerprint, norm_stats
from reprolab.diagnostics.retrieval import oracle_recall
from reprolab.experiments.registry import config_value, experiment

DEFAULT_ENV = "REPROLAB_LVM_GTR_DIR"
_NUM = (int, float)


# --------------------------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=4)
def _corpora(data: str, root: str) -> tuple[EmbeddedCorpus, EmbeddedCorpus]:
    """Cached by the resolved directory (not the variable's name), so a changed path is never served stale.
    For ``data == "fixture"``, ``root`` is the fixture corpus's name."""
    if data == "fixture":
        return load_lvm_fixture("clean", corpus=root), load_lvm_fixture("diluted", corpus=root)
    return (
        load_embedded_corpus(Path(root) / "clean.npz", name="clean"),
        load_embedded_corpus(Path(root) / "diluted.npz", name="diluted"),
    )


def _load(config: Mapping[str, Any]) -> tuple[EmbeddedCorpus, EmbeddedCorpus]:
    data = config_value(config, "data", "fixture", kind=str)
    if data == "fixture":
        corpus = config_value(config, "fixture", "pydoc", kind=str)
        if corpus not in FIXTURE_CORPORA:
            raise ValueError(f"config key 'fixture' must be one of {FIXTURE_CORPORA}, got {corpus!r}")
        return _corpora("fixture", corpus)
    if data != "env":
        raise ValueError(f"config key 'data' must be 'fixture' or 'env', got {data!r}")
    env = config_value(config, "env", DEFAULT_ENV, kind=str)
    root = os.environ.get(env)
    if not root:
        raise ValueError(f"environment variable {env} is not set (it must name the GTR-T5 data directory)")
    return _corpora("env", str(Path(root).resolve()))


@contextmanager
def _torch_threads(n: int | None):
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------------------------- diagnostics

@experiment(
    "lvm.data_diagnostics",
    version="1",
    metrics={
        "norm_mean": (0.0, None), "norm_std": (0.0, None), "norm_ok": (0.0, 1.0),
        "recall_at_1": (0.0, 1.0), "recall_at_5": (0.0, 1.0), "recall_at_1000": (0.0, 1.0),
        "n_duplicate_queries": (0.0, None), "recall_at_1_ties_as_hits": (0.0, 1.0),
        "coh_clean_mean": (-1.0, 1.0), "coh_diluted_mean": (-1.0, 1.0),
        "coh_clean_frac_low": (0.0, 1.0), "coh_diluted_frac_low": (0.0, 1.0),
        "coh_clean_p50": (-1.0, 1.0), "coh_diluted_p50": (-1.0, 1.0),
        "drift_mean_rel": (None, None), "drift_low_change_pp": (-100.0, 100.0), "drift_significant": (0.0, 1.0),
        "elem_mean_clean": (-1.0, 1.0), "elem_mean_diluted": (-1.0, 1.0),
        "elem_std_clean": (0.0, 1.0), "elem_std_diluted": (0.0, 1.0),
        "elem_mean_absdiff": (0.0, 2.0), "elem_std_absdiff": (0.0, 1.0),
        "filter_kept_fraction": (0.0, 1.0), "filter_coh_before": (-1.0, 1.0), "filter_coh_after": (-1.0, 1.0),
        "filter_coh_rel_gain": (None, None), "filter_n_blocklisted": (0.0, None), "filter_n_low_score": (0.0, None),
    },
    config_keys=("data", "env", "fixture", "scope", "n_queries", "context", "min_score"),
)
def data_diagnostics(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    """Note 003's P0 (norms, recall) and P1 (coherence, drift, filter) plus note 002's element statistics.

    ``scope``: ``stream`` (the reference: consecutive rows regardless of articles) or ``within`` (pairs inside
    articles only). The filter runs on the diluted corpus's context-``context`` sequences.
    """
    clean, diluted = _load(config)
    scope = config_value(config, "scope", "stream", kind=str)
    if scope not in ("stream", "within"):
        raise ValueError(f"config key 'scope' must be 'stream' or 'within', got {scope!r}")
    n_queries = config_value(config, "n_queries", 1000, kind=int)
    context = config_value(config, "context", 5, kind=int)
    min_score = float(config_value(config, "min_score", 0.35, kind=_NUM))

    norms = norm_stats(diluted.vectors)
    rec = oracle_recall(diluted.vectors, ks=(1, 5, 1000), n_queries=min(n_queries, len(diluted)), seed=seed)
    ca = coherence_stats(clean.vectors, clean.article_ids if scope == "within" else None, name=clean.name)
    cb = coherence_stats(diluted.vectors, diluted.article_ids if scope == "within" else None, name=diluted.name)
    drift = coherence_drift(ca, cb)
    ea, eb = element_stats(clean.vectors), element_stats(diluted.vectors)

    seqs = SequenceSet.from_corpus(diluted, context)
    pair_cos = consecutive_cosines(diluted.vectors)  # one pass shared by the filter and both coherences
    filt = quality_filter(
        diluted.vectors, diluted.article_ids, seqs.targets, min_score=min_score, titles=diluted.titles,
        texts=diluted.texts, blocklist=BLOCKLIST, pair_cos=pair_cos,
    )
    before = window_coherence(diluted.vectors, seqs.targets, context, pair_cos=pair_cos)
    after = window_coherence(diluted.vectors, seqs.targets[filt.mask], context, pair_cos=pair_cos)
    return {
        "norm_mean": norms.mean, "norm_std": norms.std, "norm_ok": float(norms.ok),
        "recall_at_1": rec.recall[1], "recall_at_5": rec.recall[5], "recall_at_1000": rec.recall[1000],
        "n_duplicate_queries": float(rec.n_duplicate_queries), "recall_at_1_ties_as_hits": rec.recall_at_1_ties_as_hits,
        "coh_clean_mean": ca.mean, "coh_diluted_mean": cb.mean,
        "coh_clean_frac_low": ca.frac_low, "coh_diluted_frac_low": cb.frac_low,
        "coh_clean_p50": ca.p50, "coh_diluted_p50": cb.p50,
        "drift_mean_rel": drift.mean_rel, "drift_low_change_pp": drift.low_change_pp,
        "drift_significant": float(drift.significant),
        "elem_mean_clean": ea.mean, "elem_mean_diluted": eb.mean, "elem_std_clean": ea.std, "elem_std_diluted": eb.std,
        "elem_mean_absdiff": abs(ea.mean - eb.mean), "elem_std_absdiff": abs(ea.std - eb.std),
        "filter_kept_fraction": filt.kept_fraction, "filter_coh_before": before, "filter_coh_after": after,
        "filter_coh_rel_gain": after / before - 1.0,
        "filter_n_blocklisted": float(filt.n_blocklisted), "filter_n_low_score": float(filt.n_low_score),
    }


# --------------------------------------------------------------------------------------------- fingerprint

_PROBE_CODE = (
    "import sys, json; from reprolab.data.corpus import minilm_encode; "
    "from reprolab.diagnostics.embeddings import encoder_fingerprint; "
    "print(encoder_fingerprint(minilm_encode(json.loads(sys.argv[1]))))"
)


@experiment(
    "lvm.encoder_fingerprint",
    version="2",
    metrics={
        "fingerprint_repeatable": (0.0, 1.0), "fingerprint_cross_process": (0.0, 1.0),
        "fingerprint_matches_fixture": (0.0, 1.0), "probe_max_abs_diff": (0.0, 2.0),
    },
    config_keys=(),
)
def encoder_fingerprint_experiment(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    """Fingerprint the real encoder three times (here, here again, a fresh interpreter) and compare with the
    fixture's recorded probe.

    The reference's salted ``hash()`` recipe is no longer run: whether two interpreters agree on ``hash(bytes)``
    is decided by ``PYTHONHASHSEED`` (an experiment that sets it fixes its own outcome; one that inherits it
    measures the caller's shell). See docs/lvm.md, "Dropped checks".
    """
    import json

    from reprolab.data.corpus import minilm_encode
    from reprolab.data.sequences import FIXTURE_DIR

    provenance = json.loads((FIXTURE_DIR / "PROVENANCE.json").read_text())
    probe_texts = list(provenance["probe_sentences"])
    with np.load(FIXTURE_DIR / "encoder_probe.npz", allow_pickle=False) as f:
        recorded = f["vectors"]
    first = minilm_encode(probe_texts)
    second = minilm_encode(probe_texts)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    fresh = subprocess.run(
        [sys.executable, "-c", _PROBE_CODE, json.dumps(probe_texts)], capture_output=True, text=True, env=env,
        check=True, timeout=300,
    ).stdout.strip().splitlines()[-1]
    fp = encoder_fingerprint(first)
    return {
        "fingerprint_repeatable": float(fp == encoder_fingerprint(second)),
        "fingerprint_cross_process": float(fp == fresh),
        "fingerprint_matches_fixture": float(fp == provenance["probe_fingerprint_sha256_4dp"]),
        "probe_max_abs_diff": float(np.abs(first - recorded).max()),
    }


# --------------------------------------------------------------------------------------------- training

def same_article_pairs_per_batch(article_of_window: np.ndarray, batch_size: int) -> float:
    """Expected number of window pairs from one article in a uniformly shuffled batch of ``batch_size``:
    C(B, 2) * sum_a w_a (w_a - 1) / (W (W - 1)), with w_a the article's window count and W = sum w_a.

    Such a pair is an InfoNCE "negative" that is the positive's neighbour in its own article. Note 002's data
    (726,014 sequences, ~15k articles) gives ~0.06 per batch of 32; the pydoc fixture gives 15-28."""
    _, w = np.unique(np.asarray(article_of_window), return_counts=True)
    n = float(w.sum())
    if n < 2:
        return 0.0
    b = min(batch_size, n)
    return float(b * (b - 1) / 2 * (w * (w - 1.0)).sum() / (n * (n - 1)))


def _split(clean: EmbeddedCorpus, diluted: EmbeddedCorpus, seed: int) -> dict[str, np.ndarray]:
    clean_articles = np.unique(clean.article_ids)
    dilution_articles = np.setdiff1d(np.unique(diluted.article_ids), clean_articles)
    tr, va, ood = split_articles(clean_articles, (0.70, 0.15, 0.15), seed)
    parts = {"clean_train": tr, "clean_val": va, "ood": ood}
    if dilution_articles.size >= 2:
        dtr, dva = split_articles(dilution_articles, (0.85, 0.15), seed + 1)
    else:
        dtr, dva = dilution_articles, dilution_articles[:0]
    parts.update(dilution_train=dtr, dilution_val=dva)
    return parts


def _loss_weights(config: Mapping[str, Any]):
    from reprolab.models.lvm.losses import LossWeights

    return LossWeights(
        lambda_mse=float(config_value(config, "lambda_mse", 1.0, kind=_NUM)),
        lambda_info=float(config_value(config, "lambda_info", 0.0, kind=_NUM)),
        lambda_moment=float(config_value(config, "lambda_moment", 0.0, kind=_NUM)),
        lambda_variance=float(config_value(config, "lambda_variance", 0.0, kind=_NUM)),
        tau=float(config_value(config, "tau", 0.07, kind=_NUM)),
        variant=config_value(config, "loss_variant", "reference", kind=str),
    )


@experiment(
    "lvm.train",
    version="2",
    metrics={
        "val_cosine": (-1.0, 1.0), "ood_cosine": (-1.0, 1.0), "train_cosine": (-1.0, 1.0),
        "val_common_cosine": (-1.0, 1.0),
        "ood_random": (-1.0, 1.0), "ood_global_mean": (-1.0, 1.0), "ood_copy_last": (-1.0, 1.0),
        "ood_mean_of_context": (-1.0, 1.0), "val_mean_of_context": (-1.0, 1.0), "train_mean_of_context": (-1.0, 1.0),
        "val_common_mean_of_context": (-1.0, 1.0),
        "ood_margin_over_moc": (-2.0, 2.0), "val_margin_over_moc": (-2.0, 2.0), "train_margin_over_moc": (-2.0, 2.0),
        "val_common_margin_over_moc": (-2.0, 2.0),
        "ood_mse_raw": (0.0, None), "ood_orthogonal_mse_floor": (0.0, None),
        "ood_orthogonal_over_trained_mse": (0.0, None), "ood_raw_norm": (0.0, None),
        "ood_pred_std_ratio": (0.0, None), "ood_pred_effective_rank": (0.0, None),
        "ood_target_effective_rank": (0.0, None),
        "same_article_pairs_per_batch": (0.0, None),
        "n_train": (0.0, None), "n_val": (0.0, None), "n_ood": (0.0, None), "kept_fraction": (0.0, 1.0),
        "best_epoch": (0.0, None),
    },
    config_keys=(
        "data", "env", "fixture", "train_set", "model", "model_kwargs", "context", "epochs", "batch_size", "lr",
        "weight_decay", "grad_clip", "lambda_mse", "lambda_info", "lambda_moment", "lambda_variance", "tau",
        "loss_variant", "min_score", "device", "torch_threads",
    ),
)
def train_experiment(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    """Train ``model`` on ``train_set`` and report validation, OOD and baseline cosines.

    ``train_set``: ``clean`` (clean training articles), ``diluted`` (those + the dilution's training articles),
    ``filtered`` (the diluted training sequences that pass the quality filter). Validation uses the same kind
    of held-out articles (filtered: the diluted validation sequences passing the filter). OOD = held-out clean
    articles, identical for every arm of a seed. ``val_common_*`` is measured on one validation set for every
    arm of a seed (the unfiltered diluted validation articles), so arms can be compared without the selection
    effect of each arm's own validation windows (the filter also keeps the easier validation windows).
    ``train_margin_over_moc`` (the model against mean-of-context on its own training windows) and
    ``same_article_pairs_per_batch`` are the regime guards (docs/lvm.md).
    """
    from reprolab.models.lvm.baselines import baseline_scores
    from reprolab.models.lvm.trainer import TrainConfig, evaluate, fit, predict, seeded_model

    clean, diluted = _load(config)
    train_set = config_value(config, "train_set", kind=str)
    if train_set not in ("clean", "diluted", "filtered"):
        raise ValueError(f"config key 'train_set' must be clean, diluted or filtered, got {train_set!r}")
    context = config_value(config, "context", 5, kind=int)
    model_kind = config_value(config, "model", "amn", kind=str)
    model_kwargs = dict(config_value(config, "model_kwargs", {}, kind=dict))
    clip = config_value(config, "grad_clip", 1.0, kind=(*_NUM, type(None)))  # the reference clips at 1.0
    tc = TrainConfig(
        epochs=config_value(config, "epochs", 20, kind=int),
        batch_size=config_value(config, "batch_size", 32, kind=int),
        lr=float(config_value(config, "lr", 5e-4, kind=_NUM)),
        weight_decay=float(config_value(config, "weight_decay", 0.01, kind=_NUM)),
        loss=_loss_weights(config),
        device=config_value(config, "device", "cpu", kind=str),
        grad_clip=None if clip is None else float(clip),
    )
    threads = config_value(config, "torch_threads", 1, kind=int)
    min_score = float(config_value(config, "min_score", 0.35, kind=_NUM))

    parts = _split(clean, diluted, seed)
    ood = SequenceSet.from_corpus(clean, context, parts["ood"])
    kept_fraction = 1.0
    common_val = SequenceSet.from_corpus(diluted, context, np.concatenate([parts["clean_val"], parts["dilution_val"]]))
    if train_set == "clean":
        train = SequenceSet.from_corpus(clean, context, parts["clean_train"])
        val = SequenceSet.from_corpus(clean, context, parts["clean_val"])
    else:
        train = SequenceSet.from_corpus(diluted, context, np.concatenate([parts["clean_train"], parts["dilution_train"]]))
        val = common_val
        if train_set == "filtered":
            pair_cos = consecutive_cosines(diluted.vectors)
            masks = [
                quality_filter(diluted.vectors, diluted.article_ids, s.targets, min_score=min_score,
                               titles=diluted.titles, texts=diluted.texts, pair_cos=pair_cos).mask
                for s in (train, val)
            ]
            kept_fraction = float(masks[0].mean())
            train, val = train.subset(masks[0]), val.subset(masks[1])

    # Index-based windows only: every pass below gathers one batch at a time from the corpus vectors (which may
    # be memmaps), so nothing of size n_windows x context x d is ever built.
    with _torch_threads(threads):
        model = seeded_model(model_kind, clean.dim, seed, **model_kwargs)
        result = fit(model, train, val, tc, seed)
        raw_ood, pred_ood = predict(model, ood, device=tc.device)
        ood_cos = evaluate(model, ood, device=tc.device)
        val_cos = evaluate(model, val, device=tc.device)
        train_cos = evaluate(model, train, device=tc.device)
        common_cos = val_cos if val is common_val else evaluate(model, common_val, device=tc.device)

    base_ood = baseline_scores(ood, train, seed)
    base_val = baseline_scores(val, train, seed)
    base_train = baseline_scores(train, train, seed)
    common_moc = (base_val if val is common_val else baseline_scores(common_val, train, seed))["mean_of_context"]
    yood = ood.target_vectors()  # n_ood x d (the OOD predictions are that size too); no contexts
    d = clean.dim
    mse_raw = float(((raw_ood - yood) ** 2).mean())
    # The smallest reference-MSE any prediction orthogonal to its target can reach: ||p - t||^2 = ||p||^2 + ||t||^2
    # is minimised at p = 0, giving ||t||^2 / d per element.
    ortho_floor = float((yood**2).sum(axis=1).mean() / d)
    cm_pred, cm_tgt = collapse_metrics(pred_ood), collapse_metrics(yood)
    return {
        "val_cosine": val_cos, "ood_cosine": ood_cos, "train_cosine": train_cos, "val_common_cosine": common_cos,
        "ood_random": base_ood["random"], "ood_global_mean": base_ood["global_mean"],
        "ood_copy_last": base_ood["copy_last"], "ood_mean_of_context": base_ood["mean_of_context"],
        "val_mean_of_context": base_val["mean_of_context"], "train_mean_of_context": base_train["mean_of_context"],
        "val_common_mean_of_context": common_moc,
        "ood_margin_over_moc": ood_cos - base_ood["mean_of_context"],
        "val_margin_over_moc": val_cos - base_val["mean_of_context"],
        "train_margin_over_moc": train_cos - base_train["mean_of_context"],
        "val_common_margin_over_moc": common_cos - common_moc,
        "ood_mse_raw": mse_raw, "ood_orthogonal_mse_floor": ortho_floor,
        "ood_orthogonal_over_trained_mse": ortho_floor / mse_raw,
        "ood_raw_norm": float(np.linalg.norm(raw_ood, axis=1).mean()),
        "ood_pred_std_ratio": cm_pred.std_ratio,
        "ood_pred_effective_rank": cm_pred.effective_rank, "ood_target_effective_rank": cm_tgt.effective_rank,
        "same_article_pairs_per_batch": same_article_pairs_per_batch(train.article_ids(), tc.batch_size),
        "n_train": float(len(train)), "n_val": float(len(val)), "n_ood": float(len(ood)),
        "kept_fraction": kept_fraction, "best_epoch": float(result.best_epoch),
    }
