"""mergekit's arithmetic in a 16-bit dtype: task arithmetic, TIES and DARE computed op by op in that dtype.

mergekit 0.1.5 loads every tensor in the configured ``dtype`` and does the generalized-task-arithmetic steps in
it: ``delta = x - base``, the weights rounded to the dtype, ``delta * w``, the sign election, the masked sums,
the division by the summed weights, ``* lambda`` and ``base + mixed``; each step rounds to the dtype. At 16
bits that rounding changes 3-16% of the entries against a float32 computation (issue 14), so for a mergekit
config the engine runs these steps in the dtype too (``compute_dtype: float32`` asks for the float32 path).

The steps run on torch tensors of the dtype, so each rounds exactly as mergekit's (same torch ops: a 16-bit CPU
op computes in float32 and rounds once). Only the choice among entries tied at the trim threshold can differ
(``tie_break: mergekit`` reproduces mergekit's argsort there too) and the DARE drop masks (our seeded
generator; mergekit's is unseeded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from reprolab.mergers.weights.registry import TensorContext
from reprolab.mergers.weights.sparsify import check_density, trim_stack

SIXTEEN_BIT = (torch.bfloat16, torch.float16)
_EPS = 1e-7  # mergekit's rescaled_masked_tensor tolerance


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def _dare_in_dtype(delta: torch.Tensor, density: float, rescale: str, generator: torch.Generator | None) -> torch.Tensor:
    """Drop entries (our seeded generator, as the float32 path), rescale the survivors in mergekit's dtype."""
    if density >= 1.0:
        return delta
    keep = torch.rand(delta.shape, generator=generator, dtype=torch.float32) < density
    # mergekit rescales in the dtype for bfloat16 and in float32 for float16 (no CPU bernoulli for half)
    work = delta.dtype if delta.dtype == torch.bfloat16 else torch.float32
    x = delta.to(work)
    masked = x * keep.to(work)
    if rescale == "paper":
        masked = masked / density
    elif rescale == "l1":
        before, after = x.abs().sum(), masked.abs().sum()
        if before >= _EPS and after >= _EPS:
            masked = masked * (before / after)
    return masked.to(delta.dtype)


def gta_in_dtype(
    base: torch.Tensor,
    stack: torch.Tensor,
    weights: torch.Tensor,
    params: Mapping[str, Any],
    ctx: TensorContext,
    *,
    sparsify: str | None,
    consensus: str | None,
) -> torch.Tensor:
    """Merged *weights* (not the task vector) of one tensor, every step rounded to ``ctx.arith_dtype``.

    ``base`` and ``stack`` (the task vectors ``x_i - base``) are float32 holding values of the dtype; the
    float32 difference rounded to the dtype is exactly the dtype's own subtraction.
    """
    dt = ctx.arith_dtype
    k = stack.shape[0]
    deltas = stack.to(dt)
    if sparsify == "magnitude":
        dens = params["density"] if isinstance(params["density"], torch.Tensor) else torch.full((k,), float(params["density"]))
        trimmed = deltas.to(torch.float32)  # exact: 16-bit values; the top-k choice is the float32 path's
        scope_model = params.get("trim_scope", "tensor") == "model"
        trim_stack(trimmed, dens, ctx.thresholds if scope_model else None, ctx.ws, params.get("tie_break", "index"))
        deltas = trimmed.to(dt)
    elif sparsify == "random":
        dens = params["density"] if isinstance(params["density"], torch.Tensor) else torch.full((k,), float(params["density"]))
        rescale = {True: "l1", False: "none", None: "none"}.get(params["rescale"], params["rescale"])
        for i in range(k):
            deltas[i] = _dare_in_dtype(deltas[i], check_density(float(dens[i])), rescale, ctx.generator)
    w = _column(weights.to(dt), deltas)
    deltas.mul_(w)
    if consensus is not None:
        sign = deltas.sign()
        if consensus == "sum":
            majority = (deltas.sum(dim=0) >= 0).to(dt) * 2 - 1
        else:
            majority = (sign.sum(dim=0) >= 0).to(dt) * 2 - 1
        mask = sign == majority
        mixed = (deltas * mask).sum(dim=0)
        divisor = (w * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(dim=0)
        divisor = w.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if params.get("normalize"):
        mixed /= divisor
    lam = float(params.get("lambda", 1.0))
    if lam != 1:
        mixed *= lam
    return (base.to(dt) + mixed).to(torch.float32)
