"""Diagonal empirical Fisher of a classifier: mean over examples of the squared per-example gradient of the
log-likelihood of the observed label (per-example gradients with ``torch.func.vmap``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from reprolab.validation import check_int


def diagonal_fisher(
    model: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, *, chunk: int = 64
) -> dict[str, torch.Tensor]:
    check_int("Fisher chunk", chunk, minimum=1)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"Fisher needs matching non-empty inputs and labels, got {len(x)} and {len(y)}")
    params = {n: v.detach().to(torch.float32) for n, v in state.items() if v.is_floating_point()}
    buffers = {n: v for n, v in state.items() if n not in params}

    def nll(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {**p, **buffers}, (xi[None],))
        return torch.nn.functional.cross_entropy(logits, yi[None])

    per_example = vmap(grad(nll), in_dims=(None, 0, 0))
    acc = {n: torch.zeros_like(v) for n, v in params.items()}
    for i in range(0, len(x), chunk):
        g = per_example(params, x[i : i + chunk], y[i : i + chunk])
        for n in acc:
            acc[n] += (g[n] ** 2).sum(0)
    return {n: v / len(x) for n, v in acc.items()}
