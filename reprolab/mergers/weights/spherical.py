"""mergekit 0.1.5's spherical methods, one tensor at a time: ``slerp``, ``nuslerp``, ``multislerp``, ``karcher``.

Each does mergekit's arithmetic step by step, in the dtype mergekit does it in, so the outputs are mergekit's
bit for bit (tests/merging/test_merging_mergekit_compat.py):

- ``slerp`` computes in float32 at every dtype (mergekit's kernel does) with norms and dot products reduced
  over chunks of 2**20 entries as mergekit's are, and the result is rounded once when written;
- ``nuslerp`` and ``multislerp`` compute in the merge dtype (``ctx.arith_dtype``: the 16-bit ``dtype`` of a
  mergekit config; float32 with ``dtype: float32`` or the explicit ``compute_dtype: float32``);
- ``karcher`` keeps the unit vectors and the iterate in the merge dtype and the norms in float32.

Every function takes the engine's float32 tensors (values of the merge dtype) and returns float32.
"""

from __future__ import annotations

import torch

from reprolab.mergers.weights.params import Number
from reprolab.mergers.weights.registry import TensorContext, register

_CHUNK = 1 << 20  # mergekit's slerp reduces over chunks of this many entries (a norm of chunk norms)
_COLINEAR_DOT = 0.9995  # slerp: |cos| above this interpolates linearly
_SLERP_EPS = 1e-8  # slerp: a norm at most this is taken as 1
_NUSLERP_EPS = 1e-8  # nuslerp: colinear when 1 - cos^2 <= eps^2
_NUSLERP_NORM_FLOOR = 1e-7


def _dtype(ctx: TensorContext) -> torch.dtype:
    return ctx.arith_dtype or torch.float32


def _weights(ctx: TensorContext, weights: torch.Tensor) -> tuple[float, ...]:
    # The config's own numbers: mergekit rounds them once (to the dtype), not through float32 first.
    return ctx.weight_values or tuple(weights.tolist())


def _chunked_norm(x: torch.Tensor, spans: list[slice]) -> torch.Tensor:
    parts = torch.stack([torch.linalg.vector_norm(x[:, s], dim=1, keepdim=True) for s in spans])
    return torch.linalg.vector_norm(parts, dim=0)


def slerp_tensor(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the whole tensors ``v0`` (t = 0) and ``v1`` (t = 1), float32."""
    a, b = v0.reshape(1, -1).float(), v1.reshape(1, -1).float()
    tt = torch.tensor([[t]], dtype=torch.float32)
    if a.shape[1] == 0:
        return ((1 - tt) * a + tt * b).reshape(v0.shape)
    spans = [slice(s, s + _CHUNK) for s in range(0, a.shape[1], _CHUNK)]
    na, nb = (torch.where(n > _SLERP_EPS, n, 1) for n in (_chunked_norm(a, spans), _chunked_norm(b, spans)))
    # the dot product of the normalised vectors, chunk by chunk (normalising first cannot overflow)
    dot = torch.stack([((a[:, s] / na) * (b[:, s] / nb)).sum(dim=1, keepdim=True) for s in spans]).sum(dim=0)
    dot = dot.clamp(-1, 1)
    linear = dot.abs() > _COLINEAR_DOT
    theta = torch.acos(torch.where(linear, 0, dot))
    sin_theta = torch.sin(theta)
    ca = torch.where(linear, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    cb = torch.where(linear, tt, torch.sin(tt * theta) / sin_theta)
    out = torch.empty_like(a)
    for s in spans:
        out[:, s] = ca * a[:, s] + cb * b[:, s]
    return out.reshape(v0.shape)


@register(
    "slerp",
    uses_task_vectors=False,
    defaults={"t": None},
    needs_base=True,
    n_sources=1,
    rules={"t": Number()},
)
def slerp(base, stack, weights, params, ctx):
    """mergekit's SLERP from the base (t = 0) to the other model (t = 1), over each whole tensor."""
    return slerp_tensor(float(params["t"]), base, stack[0])


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=_NUSLERP_NORM_FLOOR)


def nuslerp_tensor(
    t: float, v0: torch.Tensor, v1: torch.Tensor, *, row_wise: bool, flatten: bool
) -> torch.Tensor:
    """NuSLERP of ``v0`` and ``v1`` in their dtype: over the whole tensor (``flatten``), else per vector along
    the last dimension (per vector along the first with ``row_wise``); linear where colinear."""
    shape = v0.shape
    swap = not flatten and row_wise
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif swap:
        v0, v1 = v0.transpose(0, -1), v1.transpose(0, -1)
    cos = torch.sum(_unit_rows(v0) * _unit_rows(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= _NUSLERP_EPS**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    spherical = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    out = torch.where(colinear, (1 - t) * v0 + t * v1, spherical)
    if swap:
        out = out.transpose(0, -1)
    return out.reshape(shape)


@register(
    "nuslerp",
    uses_task_vectors=False,
    defaults={"nuslerp_row_wise": False, "nuslerp_flatten": True},
    per_source=("weight",),
    optional_base=True,
    n_sources=2,
)
def nuslerp(base, stack, weights, params, ctx):
    """mergekit's NuSLERP of two models, t = w_2 / (w_1 + w_2); of their task vectors when a base is given."""
    dt = _dtype(ctx)
    w = _weights(ctx, weights)
    total = w[0] + w[1]
    t = 0.5 if abs(total) < 1e-6 else w[1] / total
    a, b = stack[0].to(dt), stack[1].to(dt)
    kw = {"row_wise": bool(params["nuslerp_row_wise"]), "flatten": bool(params["nuslerp_flatten"])}
    if not ctx.has_base:
        return nuslerp_tensor(t, a, b, **kw).float()
    origin = base.to(dt)
    return (origin + nuslerp_tensor(t, a - origin, b - origin, **kw)).float()


@register(
    "multislerp",
    uses_task_vectors=False,
    defaults={"normalize_weights": True, "eps": 1e-8},
    per_source=("weight",),
    optional_base=True,
)
def multislerp(base, stack, weights, params, ctx):
    """mergekit's Multi-SLERP: weighted mean on the unit sphere through its tangent space at the normalised
    weighted mean, scaled by the weighted mean norm; of the task vectors when a base is given."""
    k = stack.shape[0]
    if k == 1:
        return stack[0]  # mergekit returns the one model as it is, base or not
    dt, eps = _dtype(ctx), float(params["eps"])
    x = stack.to(dt, copy=True)
    origin = base.to(dt) if ctx.has_base else None
    if origin is not None:
        x -= origin
    flat = x.view(k, -1)
    w = torch.tensor(_weights(ctx, weights), dtype=dt)
    if params["normalize_weights"]:
        w = w / w.sum()
    norms = torch.norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    buf = torch.empty_like(units)  # every [K, n] product below goes here: same operations, no fresh allocations
    mean = torch.mul(units, w.view(-1, 1), out=buf).sum(0)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if k != 2:
            raise ValueError(
                f"multislerp of tensor {ctx.name!r}: the weighted mean direction of the models is zero "
                "(antipodal vectors whose weights cancel); change the weights"
            )
        out = (x[0] * w[0] + x[1] * w[1]).view(x.shape[1:])  # mergekit's fallback: linear
    else:
        mean = mean / mean_norm
        # tangents = units - (units . mean) mean; step = sum_k w_k tangents_k
        along = torch.mul(units, mean, out=buf).sum(-1, keepdim=True)
        tangents = torch.sub(units, torch.mul(along, mean, out=buf), out=buf)
        step = torch.mul(tangents, w.view(-1, 1), out=buf).sum(0)
        length = torch.norm(step) + eps
        out = mean * torch.cos(length) + step * (torch.sin(length) / length)  # the exponential map back
        out = (out * (norms.squeeze(-1) * w).sum()).view(x.shape[1:])
    return (out if origin is None else out + origin).float()


def karcher_mean(tensors: list[torch.Tensor], max_iter: int, tol: float) -> torch.Tensor:
    """Equal-weight Karcher (Frechet) mean on the unit sphere times the mean norm, as mergekit computes it:
    unit vectors and iterates in the tensors' dtype, norms in float32 (float64 for float64 tensors)."""
    k = len(tensors)
    if k == 1:
        return tensors[0]
    acc = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    dt = tensors[0].dtype
    norms = [torch.linalg.vector_norm(x.to(acc)) for x in tensors]
    units = [
        torch.zeros_like(x) if n.item() == 0.0 else (x / n).to(dt)
        for x, n in zip(tensors, norms, strict=True)
    ]
    keep = [i for i in range(k) if norms[i].item() > tol]
    if not keep:
        return torch.zeros_like(tensors[0])
    share = 1.0 / k
    alphas = [share / sum(share for _ in keep) for _ in keep]
    points = [units[i] for i in keep]
    # The same operations as mergekit's, in the same order and dtypes, but into two reused buffers: each
    # temporary of a large tensor would otherwise be a fresh allocation the kernel has to fault in and zero
    # (about half of the CPU time on a 100 M-parameter model). out= and in-place ops round as the plain ones do.
    buf = torch.empty_like(points[0])
    mean = torch.zeros_like(points[0])
    for alpha, u in zip(alphas, points, strict=True):
        mean += torch.mul(u, alpha, out=buf)
    length = torch.linalg.vector_norm(mean.to(acc))
    mean = points[0].clone() if length.item() < tol else (mean / length).to(dt)
    step = torch.empty_like(mean)
    for _ in range(max_iter):
        step.zero_()
        for alpha, u in zip(alphas, points, strict=True):
            cos = torch.clamp(torch.dot(mean.flatten(), u.flatten()), -1.0, 1.0)
            angle = torch.arccos(cos)
            if angle.item() < tol:
                continue
            # step += alpha * (angle / sin(angle)) * (u - cos * mean): the log map of u at mean, weighted
            torch.sub(u, torch.mul(cos, mean, out=buf), out=buf)
            step += torch.mul(alpha * (angle / torch.sin(angle)), buf, out=buf)
        length = torch.linalg.vector_norm(step.to(acc))
        if length.item() < tol:
            break
        # mean = cos(length) * mean + sin(length) * (step / length)
        moved = torch.mul(torch.sin(length), torch.div(step, length, out=buf), out=buf)
        mean = torch.mul(torch.cos(length), mean, out=mean).add_(moved).to(dt)
        length = torch.linalg.vector_norm(mean.to(acc))
        if length.item() > tol:
            mean = torch.div(mean, length, out=mean).to(dt)
    scale = 0
    for n in norms:  # every input's norm counts, also those too small to give a direction
        scale = scale + share * n
    return scale * mean


@register("karcher", uses_task_vectors=False, defaults={"max_iter": 10, "tol": 1e-5}, base_is_source=True)
def karcher(base, stack, weights, params, ctx):
    """mergekit's Karcher mean: the Riemannian mean direction of all models (the base, if named, is one of
    them, as in mergekit), scaled by their mean norm."""
    dt = _dtype(ctx)
    out = karcher_mean(
        [stack[i].to(dt) for i in range(stack.shape[0])], int(params["max_iter"]), float(params["tol"])
    )
    return out.float()
