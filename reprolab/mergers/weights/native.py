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

from reprolab.mergers.weights.registry import TensorContext, Workspace
from reprolab.mergers.weights.sparsify import check_density, rank_band_mask, trim_stack

SIXTEEN_BIT = (torch.bfloat16, torch.float16)
_EPS = 1e-7  # mergekit's rescaled_masked_tensor tolerance


def _values(params: Mapping[str, Any], key: str, k: int) -> torch.Tensor:
    v = params[key]
    return v if isinstance(v, torch.Tensor) else torch.full((k,), float(v), dtype=torch.float64)


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


def _rescaled(x: torch.Tensor, mask: torch.Tensor, rescale: str) -> torch.Tensor:
    """mergekit's rescaled_masked_tensor (``l1``: restore the L1 norm), in ``x``'s dtype."""
    masked = x * mask
    if rescale == "l1":
        before, after = x.abs().sum(), masked.abs().sum()
        if before >= _EPS and after >= _EPS:
            masked = masked * (before / after)
    return masked


def _rescale_name(value: Any) -> str:
    return {True: "l1", False: "none", None: "none"}.get(value, value) if not isinstance(value, str) else value


def _breadcrumbs(delta: torch.Tensor, density: float, gamma: float, rescale: str, tie_break: str = "mergekit",
                 ws: Workspace | None = None) -> torch.Tensor:
    """Drop the ``gamma`` share of largest |entries| (outliers) and enough of the smallest to keep ``density``.

    The kept band of ranks is found by two selections, not a sort. Only where entries tied in |delta| straddle a
    cut does their order matter: ``tie_break="mergekit"`` (the default) then sorts the tensor as mergekit does
    (``torch.sort``, whose order among ties is its own: bit-identical, seconds per 25 M entries);
    ``"index"`` ranks them in index order (no sort; differs from mergekit at those tied entries only)."""
    if density >= 1:
        return delta
    n = delta.numel()
    keep, top = int(density * n), int(gamma * n)
    bottom = max(0, n - keep - top)
    # mergekit keeps ``torch.sort(|delta|).indices[bottom:bottom + keep]``: the same band of ranks by two
    # selections (~25x cheaper than sorting 25 M entries)
    a = delta.abs().reshape(-1).to(torch.float32).contiguous().numpy()
    band = torch.from_numpy(rank_band_mask(a, bottom, bottom + keep, ws, ties="torch" if tie_break == "mergekit" else "stable"))
    return _rescaled(delta, band.to(delta.dtype).reshape(delta.shape), rescale)


def check_della_range(params: Mapping[str, Any]) -> None:
    """DELLA keeps entries with probabilities density +/- epsilon: both must lie in (0, 1) (mergekit's rule)."""
    if "epsilon" not in params or "density" not in params:  # RAM's epsilon is a magnitude threshold
        return
    dens = torch.as_tensor(params["density"], dtype=torch.float64).reshape(-1)
    eps = torch.as_tensor(params["epsilon"], dtype=torch.float64).reshape(-1)
    for d, e in zip(dens.expand(max(len(dens), len(eps))).tolist(), eps.expand(max(len(dens), len(eps))).tolist(),
                    strict=True):
        if d < 1 and (d + e >= 1 or d - e <= 0):
            raise ValueError(f"DELLA needs density +/- epsilon inside (0, 1), got density {d:g}, epsilon {e:g}")


def _della(delta: torch.Tensor, density: float, epsilon: float, rescale: str, generator: torch.Generator | None):
    """DELLA MagPrune: keep each entry with a probability rising linearly with its magnitude rank in its row,
    from density - epsilon to density + epsilon (our seeded generator), then rescale."""
    if density >= 1:
        return delta
    work = delta.dtype if delta.dtype == torch.bfloat16 else torch.float32
    rows = delta.unsqueeze(0) if delta.dim() < 2 else delta
    # mergekit's argsort(argsort(|rows|)) + 1: the inverse of the first permutation is scattered, not sorted
    # again (a permutation's argsort is its inverse), and its per-row min / max are 1 and the row length
    order = torch.argsort(rows.abs(), dim=1, descending=False)
    inverse = torch.empty_like(order).scatter_(1, order, torch.arange(rows.shape[1]).expand_as(order).contiguous())
    ranks = inverse.to(work) + 1
    lo, hi = torch.tensor(1, dtype=work), torch.tensor(rows.shape[1], dtype=work)
    probs = (density - epsilon) + ((ranks - lo) / (hi - lo)).clamp(0, 1) * 2 * epsilon
    mask = torch.bernoulli(probs.float(), generator=generator).to(work)
    return _rescaled(rows.to(work), mask, rescale).to(delta.dtype).reshape(delta.shape)


def sign_agreement(deltas: torch.Tensor, consensus: str) -> torch.Tensor:
    """Where each (weighted) delta's sign equals the elected one, in the deltas' dtype as mergekit: the sign
    of the sum over sources (``sum``) or of the sum of signs (``count``), ties elected positive."""
    sign = deltas.sign()
    votes = deltas.sum(dim=0) if consensus == "sum" else sign.sum(dim=0)
    return sign == (votes >= 0).to(deltas.dtype) * 2 - 1


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
    """Merged *weights* (not the task vector) of one tensor, every step rounded to ``ctx.arith_dtype`` (float32
    when None: mergekit's float32 arithmetic, used by the breadcrumbs and DELLA methods at every dtype).

    ``base`` and ``stack`` (the task vectors ``x_i - base``) are float32 holding values of the dtype; the
    float32 difference rounded to the dtype is exactly the dtype's own subtraction.
    """
    dt = ctx.arith_dtype or torch.float32
    k = stack.shape[0]
    deltas = stack.to(dt)
    if sparsify == "magnitude":
        dens = _values(params, "density", k)
        trimmed = deltas.to(torch.float32)  # exact: 16-bit values; the top-k choice is the float32 path's
        scope_model = params.get("trim_scope", "tensor") == "model"
        trim_stack(trimmed, dens, ctx.thresholds if scope_model else None, ctx.ws, params.get("tie_break", "index"))
        deltas = trimmed.to(dt)
    elif sparsify in ("random", "magnitude_outliers", "della_magprune"):
        dens = _values(params, "density", k)
        rescale = _rescale_name(params.get("rescale", False))
        for i in range(k):
            d = check_density(float(dens[i]))
            if sparsify == "random":
                deltas[i] = _dare_in_dtype(deltas[i], d, rescale, ctx.generator)
            elif sparsify == "magnitude_outliers":
                deltas[i] = _breadcrumbs(deltas[i], d, float(_values(params, "gamma", k)[i]), rescale,
                                         params.get("tie_break", "mergekit"), ctx.ws)
            else:
                deltas[i] = _della(deltas[i], d, float(_values(params, "epsilon", k)[i]), rescale, ctx.generator)
    w = _column(weights.to(dt), deltas)
    deltas.mul_(w)
    if consensus is not None:
        mask = sign_agreement(deltas, consensus)
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


def passthrough_in_dtype(x: torch.Tensor, scale: float, ctx: TensorContext) -> torch.Tensor:
    """``x * scale`` rounded to the merge dtype, as mergekit computes it."""
    dt = ctx.arith_dtype or torch.float32
    return (x.to(dt) * scale).to(torch.float32)


def nearswap_in_dtype(base: torch.Tensor, other: torch.Tensor, t: float, ctx: TensorContext) -> torch.Tensor:
    """mergekit's nearswap in the merge dtype: w = clamp(t / max(|a - b|, 1e-6), 0, 1); w b + (1 - w) a."""
    dt = ctx.arith_dtype or torch.float32
    a, b = base.to(dt), other.to(dt)
    w = (t / torch.abs(a - b).clamp(min=1e-6)).clamp(min=0, max=1)
    return (w * b + (1 - w) * a).to(torch.float32)
