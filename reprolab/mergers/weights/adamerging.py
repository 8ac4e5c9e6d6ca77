"""AdaMerging (Yang et al. 2024): learn task-arithmetic coefficients by minimising prediction entropy on
unlabeled target data. Task-wise: one coefficient per source; layer-wise: one per source and tensor.

theta(lambda) = theta_0 + sum_i lambda_i * tau_i (layer-wise: lambda_{i,l} per tensor l). Literature defaults:
lambda init 0.3, Adam lr 1e-3. The model is evaluated with ``torch.func.functional_call`` so gradients reach
lambda without copying weights into the module.

Two schedules: ``steps`` Adam steps on random minibatches (the literature's), or ``epochs`` full passes over
the unlabeled data, one Adam step per minibatch, as MergingUriel's ``num_iterations`` (note 004 ran 5 such
"iterations" from the REAL similarity weights). MergingUriel also clamps the coefficients to [0, 1] after
every step (``clamp=(0.0, 1.0)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from reprolab.mergers.weights.task_vectors import check_compatible


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def _batches(n: int, batch_size: int, steps: int, epochs: int | None, gen: torch.Generator):
    """Minibatch indices: ``steps`` random draws, or ``epochs`` shuffled passes over all ``n`` examples."""
    if epochs is None:
        for _ in range(steps):
            yield torch.randint(0, n, (min(batch_size, n),), generator=gen)
        return
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        yield from perm.split(batch_size)


def adamerge(
    model: nn.Module,
    base: Mapping[str, torch.Tensor],
    task_vectors: Sequence[Mapping[str, torch.Tensor]],
    unlabeled: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    granularity: str = "task",
    init: float | Sequence[float] = 0.3,
    lr: float = 1e-3,
    steps: int = 100,
    epochs: int | None = None,
    batch_size: int = 64,
    clamp: tuple[float, float] | None = None,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Returns the merged state dict and the learned coefficients ([K] or [K, n_tensors]).

    ``unlabeled`` is the model's input tensor, or a mapping of keyword inputs (a tokenised batch for a Hugging
    Face model, whose output's ``.logits`` is used). Optimisation runs on the model's device. With ``epochs``
    set, ``steps`` is ignored and each epoch visits every example once in a seeded shuffled order.
    """
    if granularity not in ("task", "layer"):
        raise ValueError(f"AdaMerging granularity must be 'task' or 'layer', got {granularity!r}")
    if not task_vectors:
        raise ValueError("AdaMerging needs at least one task vector (the source list is empty)")
    if isinstance(unlabeled, Mapping):
        if not unlabeled:
            raise ValueError("AdaMerging needs unlabeled target data (the input mapping is empty)")
        lengths = {name: len(v) for name, v in unlabeled.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"AdaMerging's unlabeled inputs must have equal lengths, got {lengths}")
        n_data = next(iter(lengths.values()))
    else:
        n_data = len(unlabeled)
    if n_data == 0:
        raise ValueError("AdaMerging needs unlabeled target data")
    if (epochs is not None and epochs < 0) or steps < 0 or batch_size < 1:
        raise ValueError(f"AdaMerging needs steps/epochs >= 0 and batch_size >= 1, got {steps}/{epochs}/{batch_size}")
    if clamp is not None and not clamp[0] <= clamp[1]:
        raise ValueError(f"AdaMerging clamp must be (low, high) with low <= high, got {clamp}")
    device = next(model.parameters()).device
    k = len(task_vectors)
    keys = [n for n, v in base.items() if v.is_floating_point()]
    # Task vectors cover the base's floating tensors (what task_vector returns), same names and shapes.
    check_compatible({n: base[n] for n in keys}, task_vectors, [f"task_vectors[{i}]" for i in range(k)])
    init_t = torch.as_tensor(init, dtype=torch.float32).reshape(-1)
    if not torch.isfinite(init_t).all():
        raise ValueError(f"AdaMerging init must be finite, got {init}")
    init_t = init_t.expand(k).clone() if init_t.numel() == 1 else init_t.clone()
    if init_t.numel() != k:
        raise ValueError(f"{init_t.numel()} initial coefficients for {k} sources")
    lam = init_t[:, None].repeat(1, len(keys)) if granularity == "layer" else init_t
    lam = lam.clone().to(device).requires_grad_(True)
    # One flat [K, P] matrix of task vectors: a step costs one matmul plus views, not one op per tensor.
    sizes = [base[n].numel() for n in keys]
    tv_flat = torch.stack([torch.cat([tv[n].reshape(-1).to(torch.float32) for n in keys]) for tv in task_vectors]).to(device)
    b_flat = torch.cat([base[n].reshape(-1).to(torch.float32) for n in keys]).to(device)
    # a NaN anywhere would make every learned coefficient NaN, silently
    inputs = unlabeled.values() if isinstance(unlabeled, Mapping) else [unlabeled]
    for label, t in [("the base", b_flat), *((f"task_vectors[{i}]", tv_flat[i]) for i in range(k)),
                     *(("the unlabeled inputs", x) for x in inputs if x.is_floating_point())]:
        if not torch.isfinite(t).all():
            raise ValueError(f"AdaMerging: {label} holds non-finite values (NaN or inf)")
    sizes_t = torch.tensor(sizes, device=device)
    buffers = {n: v.to(device) for n, v in base.items() if n not in keys}

    def params(lam: torch.Tensor) -> dict[str, torch.Tensor]:
        if granularity == "layer":
            flat = b_flat + (lam.repeat_interleave(sizes_t, dim=1) * tv_flat).sum(0)
        else:
            flat = b_flat + lam @ tv_flat
        out = {n: t.view(base[n].shape) for n, t in zip(keys, flat.split(sizes), strict=True)}
        return {**out, **buffers}

    opt = torch.optim.Adam([lam], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    for idx in _batches(n_data, batch_size, steps, epochs, gen):
        if isinstance(unlabeled, Mapping):
            out = functional_call(model, params(lam), (), {k: v[idx.to(v.device)] for k, v in unlabeled.items()})
        else:
            out = functional_call(model, params(lam), (unlabeled[idx.to(unlabeled.device)],))
        loss = _entropy(getattr(out, "logits", out))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if clamp is not None:
            with torch.no_grad():
                lam.clamp_(clamp[0], clamp[1])
    with torch.no_grad():
        merged = {n: v.detach().to(device="cpu", dtype=base[n].dtype) for n, v in params(lam).items()}
    return {n: merged[n] for n in base}, lam.detach().cpu()
