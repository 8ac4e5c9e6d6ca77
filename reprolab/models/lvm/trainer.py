"""Training loop: AdamW, ReduceLROnPlateau on validation cosine, progress callback, safetensors checkpoints.

Determinism: the model is initialised under ``torch.manual_seed(seed)`` inside a forked RNG (the caller's global
state is untouched), batches are shuffled by a ``torch.Generator`` seeded from ``seed``, and deterministic
algorithms are requested. Same data + config + seed -> the same weights, on the same device and torch build.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reprolab.models.lvm.losses import LossWeights, compose_loss
from reprolab.models.lvm.models import build_model

__all__ = [
    "EpochRecord",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "fit",
    "load_checkpoint",
    "predict",
    "save_checkpoint",
    "seeded_model",
]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    loss: LossWeights = field(default_factory=LossWeights)
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    keep_best: bool = True
    """restore the weights of the epoch with the best validation cosine (the reference saved its best model)."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {self.epochs}, {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    terms: dict[str, float]
    val_cosine: float
    lr: float
    seconds: float
    samples_per_second: float


@dataclass
class TrainResult:
    model: nn.Module
    history: list[EpochRecord]
    best_epoch: int
    best_val_cosine: float


ProgressFn = Callable[[EpochRecord], None]


def seeded_model(kind: str, dim: int, seed: int, **kwargs: object) -> nn.Module:
    """Build a model whose initial weights depend only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(kind, dim, **kwargs)


def _as_tensor(x: np.ndarray | torch.Tensor, name: str, device: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if isinstance(x, np.ndarray) else x.float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t.to(device)


@torch.no_grad()
def predict(model: nn.Module, contexts: np.ndarray | torch.Tensor, *, batch_size: int = 1024, device: str = "cpu"):
    """``(raw, normalized)`` predictions as float32 numpy arrays."""
    model.eval()
    x = _as_tensor(contexts, "contexts", device)
    raws, norms = [], []
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i : i + batch_size])
        raws.append(out.raw.cpu())
        norms.append(out.normalized.cpu())
    return torch.cat(raws).numpy(), torch.cat(norms).numpy()


def evaluate(model: nn.Module, contexts, targets, *, batch_size: int = 1024, device: str = "cpu") -> float:
    """Mean cosine between the normalised predictions and the (normalised) targets."""
    _, pred = predict(model, contexts, batch_size=batch_size, device=device)
    t = np.asarray(targets, dtype=np.float32)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    return float(np.einsum("ij,ij->i", pred, t).mean())


def fit(
    model: nn.Module,
    train_contexts: np.ndarray,
    train_targets: np.ndarray,
    val_contexts: np.ndarray,
    val_targets: np.ndarray,
    config: TrainConfig,
    seed: int,
    *,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train ``model`` in place and return it with its per-epoch history."""
    dev = config.device
    torch.use_deterministic_algorithms(True, warn_only=True)
    xc = _as_tensor(train_contexts, "train_contexts", dev)
    yt = _as_tensor(train_targets, "train_targets", dev)
    if xc.ndim != 3 or yt.ndim != 2 or xc.shape[0] != yt.shape[0] or xc.shape[-1] != yt.shape[-1]:
        raise ValueError(f"train contexts {tuple(xc.shape)} and targets {tuple(yt.shape)} do not match")
    if xc.shape[0] < 2:
        raise ValueError(f"need at least 2 training sequences, got {xc.shape[0]}")
    model.to(dev)
    # fused AdamW: one kernel per step instead of a dozen per parameter (~40% faster on small CPU models)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=config.plateau_factor, patience=config.plateau_patience
    )
    gen = torch.Generator().manual_seed(seed)
    n = xc.shape[0]
    history: list[EpochRecord] = []
    best = (-np.inf, 0, None)
    for epoch in range(1, config.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(dev)
        total, seen = 0.0, 0
        sums: dict[str, float] = {}
        for i in range(0, n, config.batch_size):
            idx = perm[i : i + config.batch_size]
            if idx.numel() < 2:  # in-batch negatives and per-dim std need two rows
                continue
            out = model(xc[idx])
            loss, terms = compose_loss(out.raw, out.normalized, yt[idx], config.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
            seen += idx.numel()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v * idx.numel()
        seconds = time.perf_counter() - t0
        val = evaluate(model, val_contexts, val_targets, device=dev)
        sched.step(val)
        record = EpochRecord(
            epoch, total / seen, {k: v / seen for k, v in sums.items()}, val, opt.param_groups[0]["lr"], seconds,
            seen / seconds if seconds > 0 else float("inf"),
        )
        history.append(record)
        if progress is not None:
            progress(record)
        if val > best[0]:
            best = (val, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
    if config.keep_best and best[2] is not None:
        model.load_state_dict(best[2])
    model.eval()
    return TrainResult(model, history, int(best[1]), float(best[0]))


def save_checkpoint(model: nn.Module, path: str | Path, *, kind: str, **model_kwargs: object) -> None:
    """Weights as safetensors, with the model kind, dim and constructor arguments in the metadata."""
    from safetensors.torch import save_file

    dim = int(model.dim)  # type: ignore[attr-defined]
    meta = {"kind": kind, "dim": str(dim), "kwargs": json.dumps(model_kwargs, sort_keys=True)}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta)


def load_checkpoint(path: str | Path) -> nn.Module:
    """Rebuild a model saved by :func:`save_checkpoint` (safetensors only: no pickle is ever loaded)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "kind" not in meta or "dim" not in meta:
        raise ValueError(f"{path}: not a reprolab LVM checkpoint (metadata lacks kind/dim)")
    kwargs = json.loads(meta.get("kwargs", "{}"))
    for k, v in list(kwargs.items()):
        if isinstance(v, list):
            kwargs[k] = tuple(v)
    model = build_model(meta["kind"], int(meta["dim"]), **kwargs)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model


def config_dict(config: TrainConfig) -> dict[str, object]:
    """A flat, JSON-able view of ``config`` (for logs and provenance)."""
    d = asdict(config)
    d.update({f"loss_{k}": v for k, v in d.pop("loss").items()})
    return d
