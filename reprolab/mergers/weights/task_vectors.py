"""Task vectors tau_i = theta_i - theta_pretrained, and the guard against the wrong base.

Note 004's "IncTar bug" took task vectors against the first *source* instead of the pretrained model: that
source's own vector became zero and the merge silently dropped it. The guard here makes that impossible by
accident: a base equal to one of the sources is an error unless the caller passes ``allow_source_as_base``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

StateDict = Mapping[str, torch.Tensor]


class BaseIsSourceError(ValueError):
    """The model given as the pretrained base is one of the sources."""


def _float_keys(sd: StateDict) -> list[str]:
    return [k for k, v in sd.items() if v.is_floating_point()]


def check_compatible(
    base: StateDict, sources: Sequence[StateDict], names: Sequence[str] | None = None, *, base_name: str = "the base"
) -> None:
    """Same tensor names and shapes in base and every source; errors name the tensor and the model."""
    if not sources:
        raise ValueError("merge needs at least one source model (the source list is empty)")
    names = list(names) if names is not None else [f"source[{i}]" for i in range(len(sources))]
    for label, sd in zip(names, sources, strict=True):
        missing = sorted(set(base) - set(sd))
        extra = sorted(set(sd) - set(base))
        if missing:
            raise ValueError(f"{label} is missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} present in {base_name}")
        if extra:
            raise ValueError(f"{label} has tensor(s) {extra[:5]}{' ...' if len(extra) > 5 else ''} absent from {base_name}")
        for k, v in base.items():
            if tuple(sd[k].shape) != tuple(v.shape):
                raise ValueError(f"tensor {k!r}: {label} has shape {tuple(sd[k].shape)}, {base_name} {tuple(v.shape)}")


def check_base_not_source(
    base: StateDict, sources: Sequence[StateDict], *, allow_source_as_base: bool = False, names: Sequence[str] | None = None
) -> None:
    """Raise :class:`BaseIsSourceError` when the base equals a source (the IncTar bug), unless allowed."""
    if allow_source_as_base:
        return
    names = list(names) if names is not None else [f"source[{i}]" for i in range(len(sources))]
    keys = _float_keys(base)
    for label, sd in zip(names, sources, strict=True):
        if all(sd[k] is base[k] or torch.equal(sd[k], base[k]) for k in keys):
            raise BaseIsSourceError(
                f"the base model is identical to {label}: task vectors must be taken against the pretrained model, "
                "not a fine-tuned source (its task vector would be zero and it would silently drop out). "
                "Pass the pretrained checkpoint as base, or allow_source_as_base=True to do this on purpose."
            )


def task_vector(base: StateDict, finetuned: StateDict) -> dict[str, torch.Tensor]:
    """tau = finetuned - base for every floating tensor (float32)."""
    check_compatible(base, [finetuned])
    return {k: finetuned[k].to(torch.float32) - base[k].to(torch.float32) for k in _float_keys(base)}


def apply_task_vector(base: StateDict, tau: StateDict, scale: float = 1.0) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in base.items():
        out[k] = (v.to(torch.float32) + scale * tau[k]).to(v.dtype) if k in tau else v.clone()
    return out


def flatten(tau: StateDict, keys: Sequence[str] | None = None) -> torch.Tensor:
    keys = list(keys) if keys is not None else sorted(tau)
    return torch.cat([tau[k].reshape(-1).to(torch.float32) for k in keys])
