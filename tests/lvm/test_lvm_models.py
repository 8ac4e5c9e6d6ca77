"""Model shapes at any dimension, the AMN parameter count, bad input."""

from __future__ import annotations

import pytest
import torch

from reprolab.models.lvm.models import MODELS, build_model, n_parameters

SMALL = {
    "amn": {"attn_dim": 16, "hidden": (32, 16)},
    "lstm": {"hidden": 32},
    "gru": {"hidden": 32, "blocks": 2},
    "transformer": {"d_model": 32, "heads": 4, "layers": 2},
}


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("dim", [7, 48])
def test_models_return_raw_and_unit_predictions(kind, dim):
    torch.manual_seed(0)
    model = build_model(kind, dim, **SMALL[kind])
    out = model(torch.randn(3, 5, dim))
    assert out.raw.shape == out.normalized.shape == (3, dim)
    assert torch.allclose(out.normalized.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out.normalized, torch.nn.functional.normalize(out.raw, dim=-1))


def test_amn_parameter_count_matches_reference():
    assert n_parameters(build_model("amn", 768)) == 1_510_912  # "about 1.51 M parameters at d = 768"


def test_amn_attends_over_raw_context():
    """With a zero residual MLP the AMN returns normalize(mean of context) exactly."""
    model = build_model("amn", 8, attn_dim=4, hidden=(8, 4))
    torch.nn.init.zeros_(model.mlp[-1].weight)
    torch.nn.init.zeros_(model.mlp[-1].bias)
    x = torch.randn(2, 5, 8)
    assert torch.allclose(model(x).normalized, torch.nn.functional.normalize(x.mean(1), dim=-1), atol=1e-6)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_bad_context_shapes(kind):
    model = build_model(kind, 6, **SMALL[kind])
    with pytest.raises(ValueError, match="dimension 5"):
        model(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"\(batch, T, d\)"):
        model(torch.randn(2, 6))
    with pytest.raises(ValueError, match="empty context"):
        model(torch.randn(2, 0, 6))


def test_unknown_model_and_bad_dim():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("mamba", 8)
    with pytest.raises(ValueError, match="positive"):
        build_model("amn", 0)
    for dim in (2.5, "8", True):
        with pytest.raises(ValueError, match="embedding dimension must be a positive integer"):
            build_model("amn", dim)


def test_transformer_heads_and_max_len_are_checked_at_construction():
    with pytest.raises(ValueError, match="d_model 10 is not divisible by heads 3"):
        build_model("transformer", 4, d_model=10, heads=3)
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        build_model("transformer", 4, d_model=8, heads=2, max_len=0)
