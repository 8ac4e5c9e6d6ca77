"""pytest-benchmark timings of the clustering line's critical kernels (run: pytest -m benchmark benchmarks/clustering).

Sizes: the digits fast-claim shapes (N=1438, D=64, K=50, L=10) and MNIST-sized label vectors for NMI.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reprolab.data.digits import load_digits_split
from reprolab.diagnostics.clustering import nmi
from reprolab.mergers.components import CoAssignmentMerger, EntropyMerger
from reprolab.models.mixtures import HierarchicalMixture, MixtureOfFactorAnalyzers
from reprolab.models.mixtures._factor import factor_posterior
from reprolab.models.mixtures.mfa import _em_step_jit

pytestmark = pytest.mark.benchmark


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits_split().X_train


@pytest.fixture(scope="module")
def mfa(digits):
    return MixtureOfFactorAnalyzers(50, 10, n_iter=5, random_state=0).fit(digits)


def test_bench_factor_posterior(benchmark, digits, mfa):
    p = mfa.params_
    fn = jax.jit(factor_posterior)
    X = jnp.asarray(digits)
    jax.block_until_ready(fn(X, p["means"], p["loads"], p["psi"]))
    benchmark(lambda: jax.block_until_ready(fn(X, p["means"], p["loads"], p["psi"])))


def test_bench_mfa_em_step(benchmark, digits, mfa):
    X = jnp.asarray(digits)
    jax.block_until_ready(_em_step_jit(mfa.params_, X, 1e-3))
    benchmark(lambda: jax.block_until_ready(_em_step_jit(mfa.params_, X, 1e-3)))


def test_bench_hmog_em_fit_20_iterations(benchmark, digits):
    HierarchicalMixture(50, 10, n_iter=1, random_state=0).fit(digits)  # compile outside the timing
    benchmark.pedantic(lambda: HierarchicalMixture(50, 10, n_iter=20, random_state=0).fit(digits), rounds=3)


def test_bench_hmog_reference_trainer_fit(benchmark, digits):
    """The note-001 digits fit (K=30, latent 10, 30 epochs x 10 AdamW steps): the steps never read the data."""
    kw = {
        "trainer": "gradient",
        "n_iter": 30,
        "steps_per_epoch": 10,
        "learning_rate": 1e-2,
        "random_state": 0,
    }
    HierarchicalMixture(30, 10, **{**kw, "n_iter": 1}).fit(digits)  # compile outside the timing
    benchmark.pedantic(lambda: HierarchicalMixture(30, 10, **kw).fit(digits), rounds=3)


def test_bench_coassignment_merge(benchmark, digits, mfa):
    resp = mfa.predict_proba(digits)
    benchmark(lambda: CoAssignmentMerger().fit(resp, 10))


def test_bench_entropy_merge(benchmark, digits, mfa):
    resp = mfa.predict_proba(digits)
    benchmark.pedantic(lambda: EntropyMerger().fit(resp, 10), rounds=3)


def test_bench_nmi_60k(benchmark):
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 10, 60_000), rng.integers(0, 200, 60_000)
    benchmark(lambda: nmi(a, b))
