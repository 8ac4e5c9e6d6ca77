"""The built-in merge methods (see :mod:`registry` for the shared signature).

mergekit-compatible semantics for ``linear``, ``task_arithmetic``, ``ties``, ``dare_linear`` and
``dare_ties`` (same defaults: ``normalize`` on for ties/linear and off for the others, ``lambda`` 1, ``density``
1, DARE ``rescale`` restoring the L1 norm), plus ``trim_scope: model`` (the TIES paper), DARE's paper rescale,
Fisher, directional consensus and NeuroMerging. AdaMerging needs a model and data, so it lives in
:mod:`adamerging` and produces coefficients for ``task_arithmetic``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from reprolab.mergers.weights.native import (
    SIXTEEN_BIT,
    check_della_range,
    gta_in_dtype,
    nearswap_in_dtype,
    passthrough_in_dtype,
)
from reprolab.mergers.weights.registry import TensorContext, Workspace, register
from reprolab.mergers.weights.sparsify import dare_drop, trim_stack


def _bcast(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return weights.view(-1, *([1] * (like.dim() - 1)))


def _per_source(params: Mapping[str, Any], key: str, k: int) -> torch.Tensor:
    v = params[key]
    t = torch.as_tensor(v, dtype=torch.float64).reshape(-1)  # exact Python floats (see MergePlan.build)
    if t.numel() == 1:
        t = t.expand(k)
    if t.numel() != k:
        raise ValueError(f"parameter {key!r} has {t.numel()} values for {k} sources")
    return t


def elect_and_mix(
    stack: torch.Tensor,
    weights: torch.Tensor,
    *,
    consensus: str | None,
    normalize: bool,
    ws: Workspace | None = None,
) -> torch.Tensor:
    """Weighted sum of task vectors, optionally with TIES sign election and the (disjoint) weighted mean.

    Mirrors mergekit's order of operations (weight, elect sign of the weighted sum with ties -> +, keep agreeing
    non-zero entries, divide by the kept weights) so results match it to float32 rounding. Scales ``stack`` in
    place; the result may be a workspace view.
    """
    ws = ws or Workspace()
    if consensus == "sum" and _fast_ok(stack, weights):
        return _elect_and_mix_sum(stack, weights, normalize, ws)
    shape = stack.shape[1:]
    stack.mul_(_bcast(weights, stack))
    mixed = ws.get("mixed", shape)
    if consensus is None:
        torch.sum(stack, dim=0, out=mixed)
        if normalize:
            div = weights.sum()
            mixed /= div if div.abs() >= 1e-8 else 1.0
        return mixed
    majority = ws.get("majority", shape)  # +1 / -1
    if consensus == "sum":
        torch.sum(stack, dim=0, out=mixed)
    elif consensus == "count":
        torch.sum(torch.sign(stack), dim=0, out=mixed)
    else:
        raise ValueError(f"consensus must be 'sum' or 'count', got {consensus!r}")
    pos = ws.get("pos", shape, torch.bool)
    torch.ge(mixed, 0, out=pos)
    majority.copy_(pos).mul_(2).sub_(1)
    mixed.zero_()
    div = ws.get("div", shape)
    div.zero_()
    tmp = ws.get("abs", shape)  # the trim's |tau| buffer is free by now
    agree = ws.get("agree", shape)
    for i in range(stack.shape[0]):
        torch.mul(stack[i], majority, out=tmp)
        agree.copy_(torch.gt(tmp, 0, out=pos))
        mixed.addcmul_(stack[i], agree)
        div.add_(agree, alpha=float(weights[i]))
    if normalize:
        if bool((weights > 0).all()):
            # div is 0 only where no entry agrees, and there mixed is 0 too: 0 / tiny = 0, as mergekit's 0 / 1
            div.clamp_min_(torch.finfo(torch.float32).tiny)
        else:
            div.masked_fill_(div == 0, 1.0)
        mixed /= div
    return mixed


def _fast_ok(stack: torch.Tensor, weights: torch.Tensor) -> bool:
    return (
        stack.dtype == torch.float32 and stack.is_contiguous() and stack.numel() > 0
        and stack.shape[0] < 256 and bool((weights > 0).all())
    )


_BLOCK = 1 << 16  # entries per block of _elect_and_mix_sum: its K + 3 rows stay in cache (see sparsify._BLOCK)


def _mix_block(rows: np.ndarray, w: list[float], unit: bool, normalize: bool, maj: np.ndarray, agree: np.ndarray,
               div: np.ndarray) -> None:
    k = rows.shape[0]
    if not unit:
        for i in range(k):
            rows[i] *= np.float32(w[i])
    if k == 1:
        np.copyto(maj, rows[0])
    else:
        np.add(rows[0], rows[1], out=maj)
        for i in range(2, k):
            np.add(maj, rows[i], out=maj)
    np.copysign(np.float32(1.0), maj, out=maj)
    div[:] = 0
    out = rows[0]
    for i in range(k):
        r = rows[i]
        np.multiply(r, maj, out=r)
        if normalize:
            np.greater(r, 0, out=agree)
            if unit:
                np.add(div, agree, out=div)
            else:
                np.add(div, np.float32(w[i]), out=div, where=agree)
        np.maximum(r, 0, out=r)
        if i:
            np.add(out, r, out=out)
    np.multiply(out, maj, out=out)
    if normalize:
        # nothing agreed -> the sum is 0 too: 0 / 1 = 0 (mergekit sets such divisors to 1)
        np.maximum(div, 1 if unit else np.float32(torch.finfo(torch.float32).tiny), out=div)
        np.divide(out, div, out=out)


def _elect_and_mix_sum(stack: torch.Tensor, weights: torch.Tensor, normalize: bool, ws: Workspace) -> torch.Tensor:
    """TIES sign election by weighted sum and disjoint (weighted) mean, in place in ``stack[0]``, in numpy.

    Same float32 operations in the same order as mergekit, arranged into fewer passes over memory: with
    ``maj = +-1`` the elected sign, the kept sum ``sum_i w_i tau_i [sign(w_i tau_i) = maj]`` equals
    ``maj * sum_i max(maj * w_i tau_i, 0)`` bit for bit (multiplying by +-1 and adding exact zeros round
    nothing, and rounding is symmetric), so no per-source mask tensor is ever materialised. The divisor is a
    per-entry count when every weight is 1 (exact in float32), else the in-order sum of the agreeing weights.
    ``maj = copysign(1, S)`` is safe at S = -0.0: that only happens when every entry is +-0, and then nothing
    agrees whichever sign is elected. Needs positive weights (a zero divisor means nothing agreed).
    """
    k = stack.shape[0]
    rows = stack.view(k, -1).numpy()
    n = rows.shape[1]
    w = [float(x) for x in weights]
    unit = all(x == 1.0 for x in w)
    # Blocks small enough that the ~15 passes below run in cache: main memory sees each row about once.
    step = min(n, _BLOCK)
    maj = ws.get("abs", (step,)).numpy()  # the trim's |tau| buffer is free by now
    agree = ws.get("kth_b1", (step,), torch.bool).numpy()
    div = ws.get("kth_b2", (step,), torch.bool).numpy().view(np.uint8) if unit else ws.get("div", (step,)).numpy()
    # a huge weight overflows to inf / NaN here; every caller checks the merged tensor finite and refuses it in one
    # line naming the tensor, so numpy's RuntimeWarning would only print stray lines before that error
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            _mix_block(rows[:, lo:hi], w, unit, normalize, maj[: hi - lo], agree[: hi - lo], div[: hi - lo])
    return stack[0]


@register("linear", uses_task_vectors=False, defaults={"normalize": True}, per_source=("weight",), row_blocks=True)
def linear(base, stack, weights, params, ctx):
    """Weighted average of the source weights (mergekit ``linear``).

    Accumulated as mergekit does (``addcmul`` into float32 zeros, then one division by the summed weights): a
    weighted sum formed as products first rounds differently wherever a product is inexact.
    """
    mixed = torch.zeros_like(stack[0])
    for i in range(stack.shape[0]):
        mixed.addcmul_(stack[i], weights[i].reshape((1,) * stack[i].dim()))
    if params["normalize"]:
        mixed /= weights.sum()
    return mixed


def _native(ctx: TensorContext) -> bool:
    """mergekit's 16-bit arithmetic for this tensor (the result is then the merged weights)."""
    ctx.returns_weights = ctx.arith_dtype in SIXTEEN_BIT
    return ctx.returns_weights


@register("task_arithmetic", uses_task_vectors=True, defaults={"lambda": 1.0, "normalize": False}, per_source=("weight",),
          row_blocks=True)
def task_arithmetic(base, stack, weights, params, ctx):
    """theta_base + lambda * sum_i w_i tau_i."""
    if _native(ctx):
        return gta_in_dtype(base, stack, weights, params, ctx, sparsify=None, consensus=None)
    return elect_and_mix(stack, weights, consensus=None, normalize=params["normalize"]) * params["lambda"]


@register(
    "ties",
    uses_task_vectors=True,
    defaults={"density": 1.0, "lambda": 1.0, "normalize": True, "int8_mask": False, "trim_scope": "tensor",
              "consensus": "sum", "tie_break": "index"},
    per_source=("weight", "density"),
    needs_global_threshold=True,
    row_blocks=True,
)
def ties(base, stack, weights, params, ctx):
    """TIES: trim (per tensor or whole model), elect sign by weighted sum, disjoint weighted mean, lambda."""
    dens = _per_source(params, "density", stack.shape[0])
    if params["trim_scope"] not in ("tensor", "model"):
        raise ValueError(f"trim_scope must be 'tensor' or 'model', got {params['trim_scope']!r}")
    if _native(ctx):
        return gta_in_dtype(base, stack, weights, {**params, "density": dens}, ctx, sparsify="magnitude",
                            consensus=params["consensus"])
    trim_stack(stack, dens, ctx.thresholds if params["trim_scope"] == "model" else None, ctx.ws, params["tie_break"],
               ctx.cuts)
    out = elect_and_mix(stack, weights, consensus=params["consensus"], normalize=params["normalize"], ws=ctx.ws)
    return out.mul_(params["lambda"]) if params["lambda"] != 1 else out


def _dare(stack, params, ctx):
    dens = _per_source(params, "density", stack.shape[0])
    rescale = params["rescale"]
    if rescale is True:
        rescale = "l1"
    elif rescale is False or rescale is None:
        rescale = "none"
    for i in range(stack.shape[0]):
        stack[i] = dare_drop(stack[i], float(dens[i]), rescale=rescale, generator=ctx.generator)
    return stack


_DARE_DEFAULTS = {"density": 1.0, "lambda": 1.0, "normalize": False, "rescale": True, "int8_mask": False}


@register("dare_linear", uses_task_vectors=True, defaults=_DARE_DEFAULTS, per_source=("weight", "density"), stochastic=True)
def dare_linear(base, stack, weights, params, ctx):
    """DARE drop-and-rescale on task arithmetic."""
    if _native(ctx):
        dens = _per_source(params, "density", stack.shape[0])
        return gta_in_dtype(base, stack, weights, {**params, "density": dens}, ctx, sparsify="random", consensus=None)
    return elect_and_mix(_dare(stack, params, ctx), weights, consensus=None, normalize=params["normalize"]) * params["lambda"]


@register("dare_ties", uses_task_vectors=True, defaults=_DARE_DEFAULTS, per_source=("weight", "density"), stochastic=True)
def dare_ties(base, stack, weights, params, ctx):
    """DARE drop-and-rescale, then TIES sign election and (optionally normalised) mixing."""
    if _native(ctx):
        dens = _per_source(params, "density", stack.shape[0])
        return gta_in_dtype(base, stack, weights, {**params, "density": dens}, ctx, sparsify="random", consensus="sum")
    return elect_and_mix(_dare(stack, params, ctx), weights, consensus="sum", normalize=params["normalize"]) * params["lambda"]


def _gta_method(sparsify: str, consensus: str | None, doc: str):
    """A mergekit generalized-task-arithmetic method computed as mergekit does (native.py), at every dtype."""

    def fn(base, stack, weights, params, ctx):
        check_della_range(params)
        ctx.returns_weights = True
        k = stack.shape[0]
        per = {key: _per_source(params, key, k) for key in ("density", "gamma", "epsilon") if key in params}
        return gta_in_dtype(base, stack, weights, {**params, **per}, ctx, sparsify=sparsify, consensus=consensus)

    fn.__doc__ = doc
    return fn


# tie_break: mergekit by default here (unlike TIES): breadcrumbs' two cuts straddle tied entries in most tensors,
# and index order would change ~3% of a 16-bit model's entries against mergekit's output
_BREADCRUMBS = {"density": 1.0, "gamma": 0.01, "lambda": 1.0, "normalize": False, "rescale": False, "int8_mask": False,
                "tie_break": "mergekit"}
_DELLA = {"density": 1.0, "epsilon": 0.15, "lambda": 1.0, "rescale": True, "int8_mask": False}
register("breadcrumbs", uses_task_vectors=True, defaults=_BREADCRUMBS, per_source=("weight", "density", "gamma"))(
    _gta_method("magnitude_outliers", None, "Model Breadcrumbs: drop the smallest and the gamma largest |tau|, mix."))
register("breadcrumbs_ties", uses_task_vectors=True, defaults=_BREADCRUMBS, per_source=("weight", "density", "gamma"))(
    _gta_method("magnitude_outliers", "sum", "Model Breadcrumbs, then TIES sign election and disjoint mean."))
register("della", uses_task_vectors=True, defaults={**_DELLA, "normalize": True},
         per_source=("weight", "density", "epsilon"), stochastic=True)(
    _gta_method("della_magprune", "sum", "DELLA: magnitude-ranked random drop (MagPrune), rescale, TIES election."))
register("della_linear", uses_task_vectors=True, defaults={**_DELLA, "normalize": False},
         per_source=("weight", "density", "epsilon"), stochastic=True)(
    _gta_method("della_magprune", None, "DELLA MagPrune drop and rescale, then a linear mix of task vectors."))


@register("passthrough", uses_task_vectors=False, defaults={"scale": 1.0}, per_source=("weight", "scale"),
          n_sources=1)
def passthrough(base, stack, weights, params, ctx):
    """mergekit's passthrough: the one model's tensors, times an optional per-model `scale` (in the merge dtype)."""
    scale = float(_per_source(params, "scale", 1)[0])
    return stack[0] if scale == 1 else passthrough_in_dtype(stack[0], scale, ctx)


@register("nearswap", uses_task_vectors=False, defaults={"t": None}, per_source=("weight",), needs_base=True,
          n_sources=1)
def nearswap(base, stack, weights, params, ctx):
    """mergekit's NearSwap: take the other model's entry where it lies within ~t of the base's, blend elsewhere."""
    return nearswap_in_dtype(base, stack[0], float(params["t"]), ctx)


@register("fisher", uses_task_vectors=False, defaults={"floor": 1e-6}, per_source=("weight",), needs_fisher=True)
def fisher(base, stack, weights, params, ctx):
    """Fisher merging: sum_i w_i F_i theta_i / sum_i w_i F_i with a floor on F (diagonal empirical Fisher)."""
    if ctx.fisher is None:
        raise ValueError(f"fisher merge of {ctx.name!r} needs per-source Fisher diagonals")
    f = ctx.fisher.to(torch.float32).clamp_min(0) + float(params["floor"])
    wf = f * _bcast(weights, stack)
    return (wf * stack).sum(dim=0) / wf.sum(dim=0)


@register("directional_consensus", uses_task_vectors=True, defaults={"lambda": 1.0, "normalize": True}, per_source=("weight",))
def directional_consensus(base, stack, weights, params, ctx):
    """Project each task vector on d = normalize(sum_i tau_i) of the tensor, then weighted mix (note 004)."""
    flat = stack.reshape(stack.shape[0], -1)
    s = flat.sum(dim=0)
    norm = s.norm()
    if norm == 0:
        return torch.zeros_like(stack[0])
    d = s / norm
    aligned = (flat @ d)[:, None] * d[None, :]
    return elect_and_mix(aligned.view_as(stack), weights, consensus=None, normalize=params["normalize"]) * params["lambda"]


_NON_NEURONAL = re.compile(r"(embed|norm|\bln|layernorm|position|token_type|wte|wpe)", re.IGNORECASE)


def is_neuronal(name: str, shape: torch.Size) -> bool:
    """Dense-layer weight matrices (rows are neurons); embeddings, norms and biases are not."""
    return len(shape) == 2 and name.endswith("weight") and not _NON_NEURONAL.search(name)


@register(
    "neuromerging",
    uses_task_vectors=True,
    defaults={"density": 0.85, "lambda": 1.0, "lambda1": 0.0, "trim_scope": "model", "variant": "official",
              "normalize": True},
    per_source=("weight", "density"),
    needs_global_threshold=True,
)
def neuromerging(base, stack, weights, params, ctx):
    """NeuroMerging (Fang et al. 2025): trim, split each neuron's tau into parts parallel and orthogonal to its
    pretrained row, TIES elect + mean each part, theta0 + lambda1 * parallel + lambda * orthogonal.

    ``variant: port`` is the third-party port used by note 004: per-tensor trim and, for lambda, 1 / (1 - masked
    L1 share) computed per tensor.
    """
    variant = params["variant"]
    if variant not in ("official", "port"):
        raise ValueError(f"neuromerging variant must be 'official' or 'port', got {variant!r}")
    k = stack.shape[0]
    dens = _per_source(params, "density", k)
    l1_before = stack.abs().sum()
    scope_model = variant == "official" and params["trim_scope"] == "model"
    trim_stack(stack, dens, ctx.thresholds if scope_model else None)
    lam = float(params["lambda"])
    if variant == "port":
        l1_after = stack.abs().sum()
        share = float(1 - l1_after / l1_before) if l1_before > 0 else 0.0
        lam = 1.0 / max(1.0 - share, 1e-6)
    norm = bool(params["normalize"])
    if not is_neuronal(ctx.name, base.shape):
        return elect_and_mix(stack, weights, consensus="sum", normalize=norm) * lam
    w0 = base.to(torch.float32)
    denom = (w0 * w0).sum(dim=1, keepdim=True).clamp_min(1e-12)
    coef = (stack * w0).sum(dim=2, keepdim=True) / denom  # [K, rows, 1]
    parallel = coef * w0
    orthogonal = stack - parallel
    out = elect_and_mix(orthogonal, weights, consensus="sum", normalize=norm) * lam
    if params["lambda1"]:
        out += elect_and_mix(parallel, weights, consensus="sum", normalize=norm) * float(params["lambda1"])
    return out


# mergekit's spherical and tensor-adaptive methods live in modules of their own; importing them registers them.
from reprolab.mergers.weights import adaptive, spherical  # noqa: E402, F401
