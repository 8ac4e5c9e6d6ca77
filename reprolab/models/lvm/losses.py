"""Training losses for next-embedding prediction, composable by weights, in two variants.

``reference`` reproduces the lnsp-phase-4 definitions (DESIGN.md section 4):
- mse: mean over batch *and dimensions* of (raw - target)^2, on the **unnormalised** output;
- info: InfoNCE with in-batch negatives in both directions, CE(pred->target) + CE(target->pred), temperature tau;
- moment: sum over dims of (mean_pred - mean_target)^2 + (std_pred - std_target)^2;
- variance: mean over dims of relu(1 - std_pred_dim).

``corrected`` fixes the two flaws DESIGN.md names:
- (a) on unit vectors a dimension's std is at most 1 and on average 1/sqrt(d), so ``relu(1 - std)`` is ~1 forever
  and only adds a constant push; the corrected hinge compares to the *target batch's* own per-dimension std:
  mean relu(std_target - std_pred) / mean std_target (0 once predictions spread as much as the data);
- (b) the reference MSE is ~1/d of a squared distance (~0.002 at d=768) while InfoNCE is ~1.4, so at 0.5/0.5
  InfoNCE outweighs MSE ~700x; the corrected MSE sums over dimensions (mean over the batch of
  ||raw - target||^2, = 2 - 2 cos on unit vectors), which puts it on InfoNCE's scale.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from reprolab.validation import is_real

__all__ = ["LossWeights", "compose_loss", "info_nce", "moment_loss", "mse_loss", "variance_loss"]

VARIANTS = ("reference", "corrected")


@dataclass(frozen=True)
class LossWeights:
    lambda_mse: float = 1.0
    lambda_info: float = 0.0
    lambda_moment: float = 0.0
    lambda_variance: float = 0.0
    tau: float = 0.07
    variant: str = "reference"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"loss variant must be one of {VARIANTS}, got {self.variant!r}")
        for k, v in asdict(self).items():
            if k == "variant":
                continue
            if not is_real(v):
                raise TypeError(f"LossWeights.{k} must be a number, got {v!r}")
            if not math.isfinite(v):
                raise ValueError(f"LossWeights.{k} must be finite, got {v}")
        if self.tau <= 0:
            raise ValueError(f"tau must be positive, got {self.tau}")
        for k, v in asdict(self).items():
            if k.startswith("lambda_") and v < 0:
                raise ValueError(f"{k} must be >= 0, got {v}")
        if not any(v for k, v in asdict(self).items() if k.startswith("lambda_")):
            raise ValueError("all loss weights are 0: nothing to train")


def _check_pair(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"{name}: pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (batch, d)")


def _check_variant(variant: str, name: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"{name}: variant must be one of {VARIANTS}, got {variant!r}")


def mse_loss(raw: torch.Tensor, target: torch.Tensor, *, variant: str = "reference") -> torch.Tensor:
    _check_pair(raw, target, "mse_loss")
    _check_variant(variant, "mse_loss")
    sq = (raw - target).pow(2)
    return sq.mean() if variant == "reference" else sq.sum(-1).mean()


def info_nce(pred: torch.Tensor, target: torch.Tensor, *, tau: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives on L2-normalised rows: CE(p->t) + CE(t->p) (the reference sums
    the two directions). Row i's positive is target i; every other target in the batch is a negative."""
    _check_pair(pred, target, "info_nce")
    if not 0 < tau < math.inf:  # also refuses NaN
        raise ValueError(f"info_nce: tau must be a positive finite number, got {tau}")
    if pred.shape[0] < 2:
        raise ValueError("info_nce needs a batch of at least 2 (in-batch negatives)")
    p = F.normalize(pred, dim=-1)
    t = F.normalize(target, dim=-1)
    logits = p @ t.T / tau
    labels = torch.arange(p.shape[0], device=p.device)
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)


def moment_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    _check_pair(pred, target, "moment_loss")
    if pred.shape[0] < 2:
        raise ValueError("moment_loss needs a batch of at least 2 (per-dimension std)")
    dm = (pred.mean(0) - target.mean(0)).pow(2)
    ds = (pred.std(0) - target.std(0)).pow(2)
    return (dm + ds).sum()


def variance_loss(pred: torch.Tensor, target: torch.Tensor | None = None, *, variant: str = "reference") -> torch.Tensor:
    if pred.ndim != 2 or pred.shape[0] < 2:
        raise ValueError(f"variance_loss needs (batch >= 2, d) predictions, got {tuple(pred.shape)}")
    _check_variant(variant, "variance_loss")
    if target is not None:
        _check_pair(pred, target, "variance_loss")
    std = pred.std(0)
    if variant == "reference":
        return F.relu(1.0 - std).mean()
    if target is None:
        raise ValueError("the corrected variance loss compares to the target batch's spread: pass target")
    ref = target.std(0).detach()
    return F.relu(ref - std).mean() / ref.mean().clamp_min(1e-12)


def compose_loss(
    raw: torch.Tensor, normalized: torch.Tensor, target: torch.Tensor, weights: LossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the enabled terms; also returns each term's value (for logging) as floats."""
    terms: dict[str, torch.Tensor] = {}
    if weights.lambda_mse:
        terms["mse"] = weights.lambda_mse * mse_loss(raw, target, variant=weights.variant)
    if weights.lambda_info:
        terms["info"] = weights.lambda_info * info_nce(normalized, target, tau=weights.tau)
    if weights.lambda_moment:
        terms["moment"] = weights.lambda_moment * moment_loss(normalized, target)
    if weights.lambda_variance:
        terms["variance"] = weights.lambda_variance * variance_loss(normalized, target, variant=weights.variant)
    total = torch.stack(list(terms.values())).sum()
    if not torch.isfinite(total):
        raise FloatingPointError(f"loss is not finite: { {k: float(v) for k, v in terms.items()} }")
    return total, {k: float(v.detach()) for k, v in terms.items()}
