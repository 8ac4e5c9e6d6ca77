"""The clustering experiment: contract (determinism, finite floats, promised metrics) and config errors."""

from __future__ import annotations

import math

import pytest

from reprolab.experiments.registry import get_experiment

TINY = {"dataset": "digits", "model": "gmm", "n_components": 12, "n_iter": 3,
        "compare_merges": ["entropy", "demp", "kl", "bhattacharyya", "ridgeline", "hungarian"]}  # fmt: skip


@pytest.fixture(scope="module")
def experiment():
    return get_experiment("clustering.overcluster_then_merge")


def test_returns_every_promised_metric_deterministically(experiment):
    first = experiment(TINY, 0)
    # a second, independent computation: calling `experiment` again would be served from its per-process memo
    assert first == dict(experiment.fn(dict(TINY), 0))
    assert set(first) <= set(experiment.metrics)
    assert {f"merged_nmi_{m}" for m in ["coassignment", *TINY["compare_merges"]]} <= set(first)
    assert all(isinstance(v, float) and math.isfinite(v) for v in first.values())
    assert first["merge_boost"] == pytest.approx(first["merged_nmi"] - first["raw_nmi"])
    assert 0.0 <= first["raw_nmi"] <= 1.0 and 0.0 <= first["merged_accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"modle": "mfa"}, "unknown config keys"),
        ({"model": "vae"}, "config key 'model' must be one of"),
        ({"dataset": "cifar"}, "config key 'dataset'"),
        ({"merge": "ward"}, "is not one of"),
        ({"n_components": "12"}, "config key 'n_components' must be int"),
        (
            {"model": "hmog", "trainer": "em", "learning_rate": 0.1},
            "do not apply to model 'hmog' with trainer 'em'",
        ),
        (
            {"model": "mfa", "trainer": "gradient", "steps_per_epoch": 5},
            r"\['steps_per_epoch'\] do not apply",
        ),
        ({"model": "hmog", "trainer": "gradient", "batch_steps": 5}, r"\['batch_steps'\] do not apply"),
        ({"model": "hmog", "trainer": "gradient", "grad_clip": "big"}, "config key 'grad_clip' must be"),
    ],
)
def test_bad_config_is_a_clear_error(experiment, override, match):
    with pytest.raises(ValueError, match=match):
        experiment({**TINY, **override}, 0)


def test_mnist_without_data_names_the_variable(experiment, monkeypatch):
    monkeypatch.delenv("REPROLAB_MNIST", raising=False)
    with pytest.raises(FileNotFoundError, match="REPROLAB_MNIST"):
        experiment({**TINY, "dataset": "mnist"}, 0)


def test_across_runs_reads_the_same_runs_and_checks_its_config():
    across = get_experiment("clustering.across_runs")
    base = {k: v for k, v in TINY.items() if k != "compare_merges"}
    out = across({"base": base, "runs": 3}, 0)
    assert out == across({"base": base, "runs": 3}, 0)
    assert set(out) == set(across.metrics)
    single = get_experiment("clustering.overcluster_then_merge")
    merged = [single(base, s)["merged_nmi"] for s in range(3)]
    assert out["max_merged_nmi"] == pytest.approx(max(merged))
    assert out["best_minus_median_merged_nmi"] == pytest.approx(max(merged) - sorted(merged)[1])
    assert -1.0 <= out["spearman_entropy_boost"] <= 1.0
    with pytest.raises(ValueError, match="unknown config keys"):
        across({"base": base, "run": 3}, 0)
    with pytest.raises(ValueError, match="variants a non-empty list"):
        across({"base": base, "variants": []}, 0)


def test_across_runs_reads_runs_another_worker_stored_in_the_result_cache(tmp_path, monkeypatch):
    """Claims share runs across pytest-xdist workers: a run in the engine's cache is read, not refitted."""
    from reprolab.claims.cache import ResultCache, cache_key

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("")
    single = get_experiment("clustering.overcluster_then_merge")
    base = {"dataset": "digits", "model": "gmm", "n_components": 7, "n_iter": 2}  # never fitted below
    cache = ResultCache(tmp_path / ".reprolab" / "cache")
    boosts = [0.1, 0.3, 0.2]
    for seed, boost in enumerate(boosts):
        metrics = {"mixture_entropy": 1.0 + seed, "merge_boost": boost, "merged_nmi": 0.5 + boost,
                   "raw_nmi": 0.5, "hard_fraction": 0.1 * seed}  # fmt: skip
        key = cache_key(single.name, single.version, single.module, base, seed, tmp_path)
        cache.put(single.name, key, metrics, config=base, seed=seed, seconds=0.0)
    out = get_experiment("clustering.across_runs")({"base": base, "runs": 3}, 0)
    assert out["mean_merge_boost"] == pytest.approx(0.2)
    assert out["max_hard_fraction"] == pytest.approx(0.2)
    assert out["spearman_entropy_boost"] == pytest.approx(0.5)
