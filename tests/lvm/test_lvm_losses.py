"""Losses: reference vs corrected definitions, properties (hypothesis), bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reprolab.models.lvm.losses import (
    LossWeights,
    compose_loss,
    info_nce,
    moment_loss,
    mse_loss,
    variance_loss,
)


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 24), st.integers(2, 48), st.integers(0, 2**31 - 1))
def test_info_nce_invariant_to_joint_permutation(n, d, seed):
    p, t = _unit(n, d, seed), _unit(n, d, seed + 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    assert torch.allclose(info_nce(p, t), info_nce(p[perm], t[perm]), atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 24), st.integers(2, 48), st.integers(0, 2**31 - 1), st.sampled_from(["reference", "corrected"]))
def test_all_losses_finite_on_unit_vectors(n, d, seed, variant):
    p, t = _unit(n, d, seed), _unit(n, d, seed + 7)
    w = LossWeights(1.0, 1.0, 1.0, 1.0, tau=0.07, variant=variant)
    total, terms = compose_loss(p, p, t, w)
    assert torch.isfinite(total) and all(math.isfinite(v) for v in terms.values())


def test_identical_inputs_give_zero_mse_and_moment():
    x = _unit(8, 16, 0)
    assert float(mse_loss(x, x)) == 0.0 and float(moment_loss(x, x)) == pytest.approx(0.0, abs=1e-12)
    assert float(variance_loss(x, x, variant="corrected")) == 0.0


def test_reference_variance_hinge_never_switches_off_on_unit_vectors():
    """DESIGN flaw (a): per-dimension std of unit vectors is ~1/sqrt(d), so relu(1 - std) stays ~1."""
    d = 384
    x = _unit(4096, d, 1)
    ref = float(variance_loss(x, variant="reference"))
    assert ref == pytest.approx(1 - 1 / math.sqrt(d), abs=0.01)
    assert float(variance_loss(x, _unit(4096, d, 2), variant="corrected")) < 0.05


def test_scale_mismatch_is_fixed_by_corrected_mse():
    """DESIGN flaw (b): the reference MSE is ~1/d of the squared distance; corrected sums over dimensions."""
    d = 768
    p, t = _unit(64, d, 3), _unit(64, d, 4)
    ref, cor = float(mse_loss(p, t)), float(mse_loss(p, t, variant="corrected"))
    assert cor == pytest.approx(ref * d, rel=1e-5)
    cos = (p * t).sum(-1)
    assert cor == pytest.approx(float((2 - 2 * cos).mean()), rel=1e-5)
    assert float(info_nce(p, t)) / ref > 500  # the reference InfoNCE dwarfs its MSE


def test_bad_input_and_weights():
    with pytest.raises(ValueError, match="batch of at least 2"):
        info_nce(_unit(1, 4, 0), _unit(1, 4, 1))
    with pytest.raises(ValueError, match="must both be"):
        mse_loss(_unit(3, 4, 0), _unit(3, 5, 0))
    with pytest.raises(ValueError, match="nothing to train"):
        LossWeights(0.0, 0.0)
    with pytest.raises(ValueError, match="variant"):
        LossWeights(variant="fixed")
    with pytest.raises(ValueError, match="tau"):
        LossWeights(tau=0.0)
    for field in ("tau", "lambda_mse", "lambda_info"):
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match=f"LossWeights.{field} must be finite"):
                LossWeights(**{field: bad})
        with pytest.raises(TypeError, match=f"LossWeights.{field} must be a number"):
            LossWeights(**{field: "0.5"})
    with pytest.raises(ValueError, match="mse_loss: variant must be one of"):
        mse_loss(_unit(3, 4, 0), _unit(3, 4, 1), variant="corected")
    with pytest.raises(ValueError, match="variance_loss: variant must be one of"):
        variance_loss(_unit(3, 4, 0), _unit(3, 4, 1), variant="corected")
    with pytest.raises(ValueError, match=r"variance_loss: pred .* and target .* must both be"):
        variance_loss(_unit(3, 4, 0), _unit(3, 5, 1), variant="corrected")
    for tau in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="info_nce: tau must be a positive finite number"):
            info_nce(_unit(3, 4, 0), _unit(3, 4, 1), tau=tau)
    nan = torch.full((4, 3), float("nan"))
    with pytest.raises(FloatingPointError, match="not finite"):
        compose_loss(nan, nan, _unit(4, 3, 0), LossWeights())


def test_compose_reports_weighted_terms():
    p, t = _unit(16, 8, 5), _unit(16, 8, 6)
    total, terms = compose_loss(p, p, t, LossWeights(0.5, 0.5))
    assert set(terms) == {"mse", "info"}
    assert float(total) == pytest.approx(sum(terms.values()), rel=1e-6)
    assert terms["mse"] == pytest.approx(0.5 * float(mse_loss(p, t)), rel=1e-6)
    np.testing.assert_allclose(terms["info"], 0.5 * float(info_nce(p, t)), rtol=1e-6)
