"""Next-embedding predictors: context (batch, T, d) -> next vector (batch, d).

Every model returns a :class:`Prediction` with the ``raw`` output (what the reference's MSE is computed on) and
its L2-normalised version (what cosine evaluation and InfoNCE use). Any embedding dimension ``d`` works; the
hidden sizes default to the reference's (DESIGN.md section 4) and can be shrunk for the fast tier.

Initialisation at mean-of-context. The AMN's output is ``normalize(b + r)`` with ``b`` the context mean; under
PyTorch's default init the residual ``r`` has norm ~sqrt(d/3) (11.1 at d = 384) against ~0.75 for ``b``, so the
untrained model is a random direction, not the baseline the architecture is built around ("Residual forces
model to beat baseline"). ``residual_init="zero"`` (the default) zeroes the residual MLP's last layer, so the
untrained AMN *is* mean-of-context and training starts from the baseline; ``"default"`` keeps PyTorch's init
(the reference's). The LSTM, GRU and Transformer of the reference have no baseline path; ``mean_skip=True``
adds one (``raw = mean(context) + head(h)``, head zeroed), a labelled deviation the fast-tier claims use so that
every architecture starts where the AMN does.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from reprolab.validation import is_integer

__all__ = ["AMN", "MODELS", "CausalTransformer", "GRUStack", "LSTMPredictor", "Prediction", "build_model", "n_parameters"]


class Prediction(NamedTuple):
    raw: torch.Tensor
    normalized: torch.Tensor


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=1e-12)


def _zero(layer: nn.Linear) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


def _output(x: torch.Tensor, head_out: torch.Tensor, mean_skip: bool) -> Prediction:
    raw = x.mean(dim=1) + head_out if mean_skip else head_out
    return Prediction(raw, _normalize(raw))


def _check_context(x: torch.Tensor, dim: int, name: str) -> None:
    if x.ndim != 3:
        raise ValueError(f"{name}: context must be (batch, T, d), got shape {tuple(x.shape)}")
    if x.shape[-1] != dim:
        raise ValueError(f"{name}: context dimension {x.shape[-1]} != model dimension {dim}")
    if x.shape[1] < 1:
        raise ValueError(f"{name}: empty context (T = 0)")


class AMN(nn.Module):
    """Attention-mixture network of the reference.

    b = mean of the context; q = W_q b and k_t = W_c x_t (d -> ``attn_dim``); a = softmax(q k^T / sqrt(attn_dim));
    c = sum_t a_t x_t (raw vectors); r = MLP([b; c]) (2d -> 512 GELU LN -> 256 GELU LN -> d);
    raw = b + r; out = normalize(raw). At d = 768 this has 1,510,912 parameters (the reference's "1.51 M").
    """

    def __init__(
        self, dim: int, *, attn_dim: int = 256, hidden: tuple[int, int] = (512, 256), residual_init: str = "zero"
    ) -> None:
        super().__init__()
        if residual_init not in ("zero", "default"):
            raise ValueError(f"AMN: residual_init must be 'zero' or 'default', got {residual_init!r}")
        self.dim, self.attn_dim = dim, attn_dim
        self.w_q = nn.Linear(dim, attn_dim)
        self.w_c = nn.Linear(dim, attn_dim)
        h1, h2 = hidden
        self.mlp = nn.Sequential(
            nn.Linear(2 * dim, h1), nn.GELU(), nn.LayerNorm(h1),
            nn.Linear(h1, h2), nn.GELU(), nn.LayerNorm(h2),
            nn.Linear(h2, dim),
        )
        if residual_init == "zero":
            _zero(self.mlp[-1])

    def forward(self, x: torch.Tensor) -> Prediction:
        _check_context(x, self.dim, "AMN")
        b = x.mean(dim=1)
        q = self.w_q(b).unsqueeze(1)  # (B, 1, A)
        k = self.w_c(x)  # (B, T, A)
        a = torch.softmax((q * k).sum(-1) / math.sqrt(self.attn_dim), dim=1)  # (B, T)
        c = (a.unsqueeze(-1) * x).sum(dim=1)
        raw = b + self.mlp(torch.cat([b, c], dim=-1))
        return Prediction(raw, _normalize(raw))


class LSTMPredictor(nn.Module):
    """2-layer LSTM (512 hidden); the last step is projected to d."""

    def __init__(self, dim: int, *, hidden: int = 512, layers: int = 2, mean_skip: bool = False) -> None:
        super().__init__()
        self.dim, self.mean_skip = dim, mean_skip
        self.lstm = nn.LSTM(dim, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, dim)
        if mean_skip:
            _zero(self.head)

    def forward(self, x: torch.Tensor) -> Prediction:
        _check_context(x, self.dim, "LSTM")
        out, _ = self.lstm(x)
        return _output(x, self.head(out[:, -1]), self.mean_skip)


class _ResidualGRU(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.norm(h))
        return h + out


class GRUStack(nn.Module):
    """d -> 512 projection, then 4 residual GRU blocks with pre-LayerNorm; the last step is projected to d."""

    def __init__(self, dim: int, *, hidden: int = 512, blocks: int = 4, mean_skip: bool = False) -> None:
        super().__init__()
        self.dim, self.mean_skip = dim, mean_skip
        self.proj = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_ResidualGRU(hidden) for _ in range(blocks))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, dim)
        if mean_skip:
            _zero(self.head)

    def forward(self, x: torch.Tensor) -> Prediction:
        _check_context(x, self.dim, "GRU")
        h = self.proj(x)
        for block in self.blocks:
            h = block(h)
        return _output(x, self.head(self.norm(h[:, -1])), self.mean_skip)


class CausalTransformer(nn.Module):
    """4-layer causal Transformer encoder (d_model 512, 8 heads, learned positions); last step -> d."""

    def __init__(
        self, dim: int, *, d_model: int = 512, heads: int = 8, layers: int = 4, max_len: int = 64, dropout: float = 0.0,
        mean_skip: bool = False,
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"Transformer: d_model {d_model} is not divisible by heads {heads}")
        if max_len < 1:
            raise ValueError(f"Transformer: max_len must be >= 1, got {max_len}")
        self.dim, self.max_len, self.mean_skip = dim, max_len, mean_skip
        self.proj = nn.Linear(dim, d_model)
        self.pos = nn.Parameter(torch.zeros(max_len, d_model))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=4 * d_model, dropout=dropout, batch_first=True, norm_first=True,
            activation="gelu",
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, dim)
        if mean_skip:
            _zero(self.head)

    def forward(self, x: torch.Tensor) -> Prediction:
        _check_context(x, self.dim, "Transformer")
        t = x.shape[1]
        if t > self.max_len:
            raise ValueError(f"Transformer: context length {t} exceeds max_len {self.max_len}")
        mask = torch.triu(torch.full((t, t), float("-inf"), device=x.device), diagonal=1)
        h = self.encoder(self.proj(x) + self.pos[:t], mask=mask)
        return _output(x, self.head(self.norm(h[:, -1])), self.mean_skip)


MODELS: dict[str, type[nn.Module]] = {
    "amn": AMN,
    "lstm": LSTMPredictor,
    "gru": GRUStack,
    "transformer": CausalTransformer,
}


def build_model(kind: str, dim: int, **kwargs: object) -> nn.Module:
    """Construct a predictor by name (``amn``, ``lstm``, ``gru``, ``transformer``)."""
    try:
        cls = MODELS[kind]
    except KeyError:
        raise ValueError(f"unknown model {kind!r}; known: {sorted(MODELS)}") from None
    if not is_integer(dim) or dim < 1:
        raise ValueError(f"embedding dimension must be a positive integer, got {dim!r}")
    return cls(dim, **kwargs)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
