"""mergekit 0.1.5's methods whose mixing coefficients come from the tensors themselves: ``model_stock``
(interpolation ratio from the angles between task vectors), ``sce`` (variance selection, per-source weights from
task-vector energy, TIES sign election), ``arcee_fusion`` (keep the changes of high importance) and ``ram`` /
``ramplus_tl`` (unique changes kept, overlapping ones averaged).

Like :mod:`spherical`, each does mergekit's arithmetic step by step in the merge dtype (``ctx.arith_dtype``;
float32 with ``dtype: float32`` or ``compute_dtype: float32``), so the outputs are mergekit's bit for bit. The
engine's tensors are float32 holding values of that dtype; results are returned in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reprolab.mergers.weights.native import sign_agreement
from reprolab.mergers.weights.params import Number
from reprolab.mergers.weights.registry import TensorContext, register

_COS_FLOOR = 1e-6  # model_stock: floor on the product of the task-vector norms
_SINGULAR = 1e-6  # model_stock: |1 + (k - 1) cos| below this keeps the base
_SCE_WEIGHT_FLOOR = 1e-6
_FUSION_EPS = 1e-8  # arcee_fusion: added to both softmax distributions
_QUANTILE_SAMPLE = 1_000_000  # arcee_fusion: quantiles of larger tensors come from a sample of this size


def _dtype(ctx: TensorContext) -> torch.dtype:
    return ctx.arith_dtype or torch.float32


@register(
    "model_stock", uses_task_vectors=False, defaults={"filter_wise": False}, needs_base=True, min_sources=2
)
def model_stock(base, stack, weights, params, ctx):
    """Model Stock (Jang et al. 2024): t = k cos / (1 + (k - 1) cos) from the mean pairwise cosine of the task
    vectors (per tensor, or per row with ``filter_wise``); t * mean of the models + (1 - t) * base."""
    dt = _dtype(ctx)
    shape = base.shape
    origin = base.to(dt)
    models = [stack[i].to(dt) for i in range(stack.shape[0])]
    if not params["filter_wise"]:
        origin, models = origin.reshape(-1), [m.reshape(-1) for m in models]
    elif origin.dim() == 1:
        origin, models = origin.unsqueeze(0), [m.unsqueeze(0) for m in models]
    k = len(models)
    deltas = [m - origin for m in models]
    cosines = []
    for i in range(k):
        for j in range(i + 1, k):
            norms = torch.norm(deltas[i], dim=-1) * torch.norm(deltas[j], dim=-1)
            cosines.append(((deltas[i] * deltas[j]).sum(dim=-1) / norms.clamp(min=_COS_FLOOR)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    denominator = 1 + (k - 1) * cos
    singular = denominator.abs() < _SINGULAR  # no finite ratio: keep the base there
    t = torch.where(
        singular, torch.zeros_like(cos), (k * cos) / torch.where(singular, torch.ones_like(cos), denominator)
    )
    average = sum(models) / k
    return (t * average + (1 - t) * origin).reshape(shape).float()


def _variance_mask(tv: torch.Tensor, share: float) -> torch.Tensor:
    """1 at the ``int(share * #nonzero)`` entries whose variance across sources is largest (torch.topk's
    choice among ties, as mergekit), else 0; in ``tv``'s dtype."""
    var = torch.var(tv, dim=0, correction=0)
    kept = int(torch.count_nonzero(var) * share)  # a float32 product, as mergekit's
    mask = torch.zeros_like(var)
    if kept:
        mask.view(-1)[torch.topk(var.abs().view(-1), k=kept, largest=True).indices] = 1
    return mask


@register("sce", uses_task_vectors=True, defaults={"select_topk": 1.0, "int8_mask": False})
def sce(base, stack, weights, params, ctx):
    """SCE (FuseChat): keep the ``select_topk`` share of entries varying most across sources, weight each task
    vector by its mean square (normalised over sources), TIES sign election, agreeing-weight mean."""
    ctx.returns_weights = True
    dt = _dtype(ctx)
    tv = stack.to(dt)
    k = tv.shape[0]
    if params["select_topk"] < 1:
        tv = tv * _variance_mask(tv, float(params["select_topk"])).unsqueeze(0)
    agree = sign_agreement(tv, "sum")
    energy = tv.square().reshape(k, -1).mean(dim=1)
    total = torch.sum(energy).item()
    share = torch.ones_like(energy) / k if abs(total) < _SCE_WEIGHT_FLOOR else energy / total
    share = share.reshape(-1, *([1] * (tv.dim() - 1))) * agree
    merged = (tv * share).sum(dim=0) / torch.sum(share, dim=0).clamp(min=_SCE_WEIGHT_FLOOR)
    return (base.to(dt) + merged).float()


def _importance(other: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """|change| times the KL divergence of softmax(other) from softmax(base) along the last dimension."""
    p = F.softmax(other, dim=-1) + _FUSION_EPS
    q = F.softmax(base, dim=-1) + _FUSION_EPS
    return (other - base).abs() * torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)


def _outlier_threshold(scores: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """median + 1.5 IQR of ``scores`` (quantiles by index into the sorted values, as mergekit's; over a sample
    drawn with ``generator`` for tensors above a million entries, where mergekit's draw is unseeded)."""
    flat = scores.reshape(-1)
    if flat.numel() > _QUANTILE_SAMPLE:
        flat = flat[torch.randint(flat.numel(), (_QUANTILE_SAMPLE,), generator=generator)]
    ordered = torch.sort(flat).values
    q1, median, q3 = ordered[(torch.tensor([0.25, 0.5, 0.75]) * (ordered.numel() - 1)).long()]
    return median + 1.5 * (q3 - q1)


@register("arcee_fusion", uses_task_vectors=False, defaults={}, needs_base=True, n_sources=1, stochastic=True)
def arcee_fusion(base, stack, weights, params, ctx):
    """Arcee Fusion: take the other model's change where its importance (|change| x row KL divergence of the
    softmaxed weights) reaches median + 1.5 IQR, keep the base elsewhere."""
    dt = _dtype(ctx)
    a, b = base.to(dt), stack[0].to(dt)
    scores = _importance(b, a)
    keep = (scores >= _outlier_threshold(scores, ctx.generator)).float()
    # float32, as mergekit's (its mask is float32): the base plus the change rounded to the dtype
    return a + (b - a) * keep


def _ram_parts(
    tv: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task vectors [K, n] with entries of |tau| <= epsilon zeroed, where each source contributes (|tau| >
    epsilon), how many contribute per entry, and where exactly one does."""
    flat = tv.reshape(tv.shape[0], -1)
    active = flat.abs() > epsilon
    counts = active.sum(dim=0, keepdim=True)
    return flat * active, active, counts, counts == 1


def _ram_shared(kept: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return kept * (counts > 1) / counts.clamp(min=1)  # entries several sources change: their mean


@register("ram", uses_task_vectors=True, defaults={"epsilon": 1e-5}, rules={"epsilon": Number(0.0)})
def ram(base, stack, weights, params, ctx):
    """Reinforced Agent Merging: per entry, the one source's change where only one changes it by more than
    epsilon, the mean of the changes where several do."""
    ctx.returns_weights = True
    dt = _dtype(ctx)
    kept, _, counts, unique = _ram_parts(stack.to(dt), float(params["epsilon"]))
    merged = (kept * unique + _ram_shared(kept, counts)).sum(dim=0, keepdim=True)
    return (base.to(dt) + merged.reshape(base.shape)).float()


@register(
    "ramplus_tl",
    uses_task_vectors=True,
    defaults={"r": 0.1, "alpha": 0.2, "epsilon": 1e-5},
    rules={"epsilon": Number(0.0)},
)
def ramplus_tl(base, stack, weights, params, ctx):
    """RAM+ (tensor-local): as ``ram``, with each source's unique changes scaled by 1 + r * min(rho, alpha),
    rho = its shared / unique contributing entries in the tensor. Float32 result, as mergekit's (its scale is)."""
    ctx.returns_weights = True
    dt = _dtype(ctx)
    eps = float(params["epsilon"])
    kept, active, counts, unique = _ram_parts(stack.to(dt), eps)
    shared = (active & (counts > 1)).sum(dim=1)
    rho = shared / (active & unique).sum(dim=1).clamp(min=eps)
    boost = 1 + float(params["r"]) * rho.clamp(min=0, max=float(params["alpha"]))
    merged = (kept * unique * boost.unsqueeze(-1) + _ram_shared(kept, counts)).sum(dim=0, keepdim=True)
    return base.to(dt) + merged.reshape(base.shape)
