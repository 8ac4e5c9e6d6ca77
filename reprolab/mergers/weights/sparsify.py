"""Sparsification of task vectors: magnitude trim (per tensor or over the whole model) and DARE drop.

Per-tensor trim follows mergekit exactly: keep the ``int(density * numel)`` largest-magnitude entries of each
tensor. Whole-model trim (the TIES paper, fusion_bench, official NeuroMerging) needs one threshold per source
over every tensor; :func:`global_thresholds` finds it exactly in two streaming passes by a radix select on the
float32 bit patterns (non-negative floats order like their bits), so no pass holds more than one tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from reprolab.mergers.weights.registry import Workspace

_EPS = 1e-7


def check_density(density: float, what: str = "density") -> float:
    d = float(density)
    if not (0.0 < d <= 1.0) or d != d:
        raise ValueError(f"{what} must lie in (0, 1], got {density!r}")
    return d


def kth_largest(a: torch.Tensor, k: int, ws: Workspace | None = None) -> torch.Tensor:
    """The k-th largest value of a 1-D tensor (1 <= k <= numel), exactly, in a few elementwise passes.

    A seeded sample brackets the answer; only entries inside the bracket are ranked exactly. Several times
    faster than ``topk``/``argsort`` on tensors of millions of entries; falls back to ``kthvalue`` when the
    bracket misses (rare; correctness never depends on the sample).
    """
    n = a.numel()
    if n <= 1 << 17:
        return torch.kthvalue(a, n - k + 1).values
    ws = ws or Workspace()
    m = 1 << 14
    sample = a[torch.randint(n, (m,), generator=torch.Generator().manual_seed(n ^ k))].sort().values
    q = 1.0 - k / n
    half = 5.0 * (q * (1 - q) / m) ** 0.5 + 2.0 / m
    lo_i, hi_i = int((q - half) * m), int((q + half) * m) + 1
    if lo_i < 0 or hi_i >= m:
        return torch.kthvalue(a, n - k + 1).values
    lo, hi = sample[lo_i], sample[hi_i]
    b1 = ws.get("kth_b1", a.shape, torch.bool)
    b2 = ws.get("kth_b2", a.shape, torch.bool)
    above = int(torch.count_nonzero(torch.gt(a, hi, out=b1)))
    torch.ge(a, lo, out=b1)
    b1.logical_and_(torch.le(a, hi, out=b2))
    inside = a[b1]
    r = k - above
    if not 1 <= r <= inside.numel():
        return torch.kthvalue(a, n - k + 1).values
    return torch.kthvalue(inside, inside.numel() - r + 1).values


def magnitude_mask(
    tv: torch.Tensor, density: float, ws: Workspace | None = None, tie_break: str = "index"
) -> torch.Tensor:
    """Boolean mask of the ``max(1, int(density * numel))`` largest |entries| of ``tv`` (exact count, as mergekit).

    Entries tied at the threshold that straddle the cut (``tau`` is quantised to the base's ulps, so this
    happens in a few tensors of a real model): ``tie_break="index"`` keeps the lowest indices (fast,
    deterministic); ``"mergekit"`` lets ``torch.argsort(descending=True)`` decide, as mergekit does, which is
    bit-identical to it but sorts the whole tensor (seconds on 25 M entries).
    With a workspace the mask is a view of a reused buffer.
    """
    density = check_density(density)
    if density >= 1.0:
        return torch.ones_like(tv, dtype=torch.bool)
    flat = tv.reshape(-1)
    if flat.numel() == 0:
        return torch.zeros_like(tv, dtype=torch.bool)
    ws = ws or Workspace()
    a = torch.abs(flat, out=ws.get("abs", flat.shape))
    k = max(1, int(density * a.numel()))
    thr = kth_largest(a, k, ws)
    mask = torch.ge(a, thr, out=ws.get("keep", a.shape, torch.bool))
    if int(torch.count_nonzero(mask)) == k:  # the usual case: no other entry equals the threshold
        return mask.view(tv.shape)
    torch.gt(a, thr, out=mask)
    need = k - int(torch.count_nonzero(mask))
    if need > 0:
        tied = (a == thr).nonzero().view(-1)
        if tie_break not in ("index", "mergekit"):
            raise ValueError(f"tie_break must be 'index' or 'mergekit', got {tie_break!r}")
        if tied.numel() == need or tie_break == "index":
            mask[tied[:need]] = True
        else:
            # Entries tied at the threshold straddle the cut: which of them survive is decided by the order
            # torch.argsort(descending=True) happens to give (size-dependent), exactly as mergekit does it.
            mask.zero_()
            mask[torch.argsort(a, descending=True)[:k]] = True
    return mask.view(tv.shape)


def trim_stack(
    stack: torch.Tensor,
    densities: torch.Tensor,
    thresholds: torch.Tensor | None = None,
    ws: Workspace | None = None,
    tie_break: str = "index",
) -> torch.Tensor:
    """Zero all but the kept entries of each task vector in ``stack`` ([K, ...]), in place; returns ``stack``.

    With ``thresholds`` (one per source, from :func:`global_thresholds`) entries with |tau| >= threshold are kept
    (whole-model scope); otherwise the per-tensor top-k of each row.
    """
    ws = ws or Workspace()
    for i in range(stack.shape[0]):
        row = stack[i]
        if thresholds is not None:
            a = torch.abs(row, out=ws.get("abs", row.shape))
            row.mul_(torch.ge(a, thresholds[i], out=ws.get("keep", row.shape, torch.bool)))
        elif float(densities[i]) < 1.0:
            row.mul_(magnitude_mask(row, float(densities[i]), ws, tie_break))
    return stack


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.abs().to(torch.float32).reshape(-1).view(torch.int32)


def global_thresholds(
    stacks: Callable[[], Iterable[torch.Tensor]], densities: Sequence[float]
) -> torch.Tensor:
    """Per-source magnitude thresholds keeping the top ``density`` fraction of |tau| over the whole model.

    ``stacks`` is called twice and must yield the same ``[K, ...]`` task-vector stacks (tensor by tensor) each
    time. Returns ``[K]`` float32 thresholds; keeping ``|tau| >= threshold`` keeps exactly ``int(density * N)``
    entries up to ties at the threshold value.
    """
    dens = [check_density(d) for d in densities]
    k_src = len(dens)
    hi = torch.zeros(k_src, 1 << 15, dtype=torch.int64)
    total = 0
    for stack in stacks():
        for i in range(k_src):
            hi[i] += torch.bincount(_bits(stack[i]) >> 16, minlength=1 << 15)
        total += stack[0].numel()
    keep = [int(d * total) for d in dens]
    bins, above = [], []
    for i in range(k_src):
        if keep[i] >= total or keep[i] == 0:
            bins.append(-1)
            above.append(0)
            continue
        from_top = torch.flip(hi[i], [0]).cumsum(0)
        j = int(torch.searchsorted(from_top, torch.tensor(keep[i])))  # first bin (from top) reaching keep
        b = (1 << 15) - 1 - j
        bins.append(b)
        above.append(int(from_top[j - 1]) if j > 0 else 0)
    lo = torch.zeros(k_src, 1 << 16, dtype=torch.int64)
    for stack in stacks():
        for i in range(k_src):
            if bins[i] < 0:
                continue
            bits = _bits(stack[i])
            sel = bits[(bits >> 16) == bins[i]]
            if sel.numel():
                lo[i] += torch.bincount(sel & 0xFFFF, minlength=1 << 16)
    out = torch.zeros(k_src, dtype=torch.float32)
    for i in range(k_src):
        if keep[i] >= total:
            out[i] = 0.0
        elif keep[i] == 0:
            out[i] = float("inf")
        else:
            need = keep[i] - above[i]
            from_top = torch.flip(lo[i], [0]).cumsum(0)
            j = int(torch.searchsorted(from_top, torch.tensor(need)))
            low = (1 << 16) - 1 - j
            out[i] = torch.tensor([(bins[i] << 16) | low], dtype=torch.int32).view(torch.float32)[0]
    return out


def dare_drop(
    tv: torch.Tensor, density: float, *, rescale: str = "l1", generator: torch.Generator | None = None
) -> torch.Tensor:
    """DARE: keep each entry with probability ``density``; rescale the survivors.

    ``rescale``: ``"paper"`` divides by ``density`` (= 1/(1-p), Yu et al.); ``"l1"`` restores the tensor's L1
    norm (mergekit's current default); ``"none"`` leaves them. Returns a new tensor.
    """
    density = check_density(density)
    if rescale not in ("l1", "paper", "none"):
        raise ValueError(f"DARE rescale must be 'l1', 'paper' or 'none', got {rescale!r}")
    if density >= 1.0:
        return tv.clone()
    keep = torch.rand(tv.shape, generator=generator, dtype=torch.float32) < density
    res = tv * keep
    if rescale == "paper":
        res /= density
    elif rescale == "l1":
        before, after = tv.abs().sum(), res.abs().sum()
        if before >= _EPS and after >= _EPS:
            res *= before / after
    return res
