"""Sparsification of task vectors: magnitude trim (per tensor or over the whole model) and DARE drop.

Per-tensor trim follows mergekit exactly: keep the ``int(density * numel)`` largest-magnitude entries of each
tensor. Whole-model trim (the TIES paper, fusion_bench, official NeuroMerging) needs one threshold per source
over every tensor; :func:`global_thresholds` finds it exactly in two streaming passes by a radix select on the
float32 bit patterns (non-negative floats order like their bits), so no pass holds more than one tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from reprolab.mergers.weights.registry import Workspace

_EPS = 1e-7


def check_density(density: float, what: str = "density") -> float:
    d = float(density)
    if not (0.0 < d <= 1.0) or d != d:
        raise ValueError(f"{what} must lie in (0, 1], got {density!r}")
    return d


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().reshape(-1).numpy()


def _threshold(a: np.ndarray, k: int, ws: Workspace) -> tuple[float, int]:
    """The k-th largest value ``thr`` of the 1-D float32 array ``a`` (1 <= k <= size), exactly, and the number of
    entries ``>= thr`` (k unless entries tied at ``thr`` straddle the cut).

    A seeded sample brackets the answer; only entries inside the bracket are ranked (``np.partition``). Four
    cheap elementwise passes instead of a sort or ``topk`` over the whole tensor (this is the hottest loop of a
    TIES merge). numpy, not torch: its boolean compare / count / select loops are several times faster than
    torch's on one thread. Falls back to ranking everything when the bracket misses (rare; the sample never
    decides the result, only the cost).
    """
    n = a.size
    if n > 1 << 17:
        m = 1 << 14
        pick = torch.randint(n, (m,), generator=torch.Generator().manual_seed(n ^ k)).numpy()
        sample = np.sort(a[pick])
        q = 1.0 - k / n
        half = 5.0 * (q * (1 - q) / m) ** 0.5 + 2.0 / m
        lo_i, hi_i = int((q - half) * m), int((q + half) * m) + 1
        if lo_i >= 0 and hi_i < m:
            lo, hi = sample[lo_i], sample[hi_i]
            b1 = _np(ws.get("kth_b1", (n,), torch.bool))
            b2 = _np(ws.get("kth_b2", (n,), torch.bool))
            np.less_equal(a, hi, out=b2)
            above = n - int(np.count_nonzero(b2))
            np.greater_equal(a, lo, out=b1)
            np.logical_and(b1, b2, out=b1)
            inside = a[np.flatnonzero(b1)]
            r = k - above
            if 1 <= r <= inside.size:
                thr = np.partition(inside, inside.size - r)[inside.size - r]
                return float(thr), above + int(np.count_nonzero(inside >= thr))
    thr = np.partition(a, n - k)[n - k]
    return float(thr), int(np.count_nonzero(a >= thr))


def kth_largest(a: torch.Tensor, k: int, ws: Workspace | None = None) -> torch.Tensor:
    """The k-th largest value of a 1-D float32 tensor (1 <= k <= numel), exactly (see :func:`_threshold`)."""
    return torch.tensor(_threshold(_np(a.contiguous()), k, ws or Workspace())[0], dtype=a.dtype)


def _largest(a: np.ndarray, t: int, ws: Workspace, out: np.ndarray, *, high_index_ties: bool) -> bool:
    """Set ``out`` to the ``t`` largest entries of the 1-D float32 ``a``, exactly ``t`` of them: among entries tied
    at the cut, the highest indices count among the largest (``high_index_ties``: as an ascending stable sort
    ranks them) or the lowest (a top-k in index order). Returns whether tied entries straddle the cut (only then
    does the order among ties decide the set). ``out`` may be the workspace's ``kth_b1`` buffer: it is written
    only after the threshold's scratch use of it."""
    n = a.size
    if t <= 0 or t >= n:
        out[:] = t > 0
        return False
    thr, n_ge = _threshold(a, t, ws)
    if n_ge == t:  # the usual case: no entry tied at the threshold is cut
        np.greater_equal(a, thr, out=out)
        return False
    np.greater(a, thr, out=out)
    need = t - int(np.count_nonzero(out))  # >= 1: more than t entries are >= thr
    tied = np.flatnonzero(a == thr)
    out[tied[-need:] if high_index_ties else tied[:need]] = True
    return True


def rank_band_mask(a: np.ndarray, lo: int, hi: int, ws: Workspace | None = None, ties: str = "stable") -> np.ndarray:
    """Boolean mask of the entries of the 1-D float32 ``a`` at ranks ``[lo, hi)`` of an ascending sort, i.e.
    ``order[lo:hi]``, found by two exact selections (:func:`_threshold`) and a few elementwise passes instead of
    sorting the whole tensor. Entries tied at a cut are ranked in index order (``ties="stable"``); with
    ``ties="torch"`` a cut that tied entries straddle is left to ``torch.sort`` (mergekit's op, whose order
    among ties is its own), so the mask is bit-identical to ``torch.sort(a).indices[lo:hi]`` always."""
    if ties not in ("stable", "torch"):
        raise ValueError(f"ties must be 'stable' or 'torch', got {ties!r}")
    n = a.size
    lo, hi = max(0, lo), min(n, hi)
    band = np.zeros(n, dtype=bool)
    if hi <= lo:
        return band
    ws = ws or Workspace()
    straddled = _largest(a, n - lo, ws, band, high_index_ties=True)  # rank >= lo
    if hi < n:
        top = np.empty(n, dtype=bool)
        straddled |= _largest(a, n - hi, ws, top, high_index_ties=True)  # rank >= hi
        np.logical_and(band, np.logical_not(top, out=top), out=band)
    if straddled and ties == "torch":
        band[:] = False
        band[torch.sort(torch.from_numpy(a)).indices[lo:hi].numpy()] = True
    return band


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
    if tie_break not in ("index", "mergekit"):
        raise ValueError(f"tie_break must be 'index' or 'mergekit', got {tie_break!r}")
    if density >= 1.0:
        return torch.ones_like(tv, dtype=torch.bool)
    if tv.numel() == 0:
        return torch.zeros_like(tv, dtype=torch.bool)
    ws = ws or Workspace()
    tv = tv.to(torch.float32).contiguous()
    flat = _np(tv)
    a = _np(ws.get("abs", (flat.size,)))
    np.abs(flat, out=a)
    k = max(1, int(density * a.size))
    mask = ws.get("kth_b1", (a.size,), torch.bool)
    m = _np(mask)
    if _largest(a, k, ws, m, high_index_ties=False) and tie_break == "mergekit":
        # Entries tied at the threshold straddle the cut: which of them survive is decided by the order
        # torch.argsort(descending=True) happens to give (size-dependent), exactly as mergekit does it.
        m[:] = False
        mask[torch.argsort(torch.from_numpy(a), descending=True)[:k]] = True
    return mask.view(tv.shape)


# Entries per block: the passes over a block run in cache, and numpy's per-call cost (which holds the GIL, so
# it is what threads of a parallel merge wait on) stays small against the block's arithmetic.
_BLOCK = 1 << 17
_SAMPLE = 1 << 14


def sample_positions(n: int, k: int) -> np.ndarray:
    """The seeded positions whose |tau| bracket the k-th largest of n entries (sorted; they decide only the cost)."""
    pick = torch.randint(n, (_SAMPLE,), generator=torch.Generator().manual_seed(n ^ k)).numpy()
    return np.sort(pick)


@dataclass
class Cut:
    """Which entries of one task vector a per-tensor top-k trim keeps: ``|tau| > thr``, plus, where entries tied
    at ``thr`` straddle the cut, the first ``ties`` of them in index order (``ties is None``: every tied entry).

    Applied block by block in index order (:func:`apply_cut`), ``ties`` counts down, so a tensor cut into row
    blocks keeps exactly the entries the whole-tensor mask keeps.
    """

    thr: float
    ties: int | None


class CutFinder:
    """The exact k-th largest |tau| of n entries, fed block by block (no whole-tensor scratch buffer).

    A seeded sample (``sample_abs``: |tau| at :func:`sample_positions`) brackets the answer; one pass counts the
    entries above the bracket and keeps those inside it; ``np.partition`` ranks only those. :meth:`finish` returns
    None when the bracket missed (rare; the caller falls back to the whole tensor): the sample never decides the
    result, only the cost.
    """

    def __init__(self, sample_abs: np.ndarray, n: int, k: int, ws: Workspace) -> None:
        self.n, self.k, self.ws = n, k, ws
        sample = np.sort(sample_abs)
        m = sample.size
        q = 1.0 - k / n
        half = 5.0 * (q * (1 - q) / m) ** 0.5 + 2.0 / m
        lo_i, hi_i = int((q - half) * m), int((q + half) * m) + 1
        self.ok = lo_i >= 0 and hi_i < m
        if self.ok:
            self.lo, self.hi = sample[lo_i], sample[hi_i]
        self.above, self.parts = 0, []

    def add(self, ab: np.ndarray) -> None:
        """Count one block of |tau| (any length; ``ab`` may be reused by the caller afterwards)."""
        if not self.ok:
            return
        c = ab.size
        m1 = self.ws.array("blk_b1", c, torch.bool)
        m2 = self.ws.array("blk_b2", c, torch.bool)
        np.less_equal(ab, self.hi, out=m2)
        self.above += c - int(np.count_nonzero(m2))
        np.greater_equal(ab, self.lo, out=m1)
        np.logical_and(m1, m2, out=m1)
        self.parts.append(ab[m1])

    def finish(self) -> Cut | None:
        if not self.ok:
            return None
        inside = np.concatenate(self.parts) if self.parts else np.empty(0, np.float32)
        self.parts = []
        r = self.k - self.above
        if not 1 <= r <= inside.size:
            return None
        thr = np.partition(inside, inside.size - r)[inside.size - r]
        if self.above + int(np.count_nonzero(inside >= thr)) == self.k:
            return Cut(float(thr), None)
        return Cut(float(thr), self.k - self.above - int(np.count_nonzero(inside > thr)))


def apply_cut(t: np.ndarray, cut: Cut, ws: Workspace) -> None:
    """Zero the entries of the float32 block ``t`` (the next block of its tensor in index order) that ``cut`` drops."""
    c = t.size
    ab = ws.array("blk_abs", c)
    m1 = ws.array("blk_b1", c, torch.bool)
    np.abs(t, out=ab)
    thr = np.float32(cut.thr)
    if cut.ties is None:
        np.greater_equal(ab, thr, out=m1)
    else:
        np.greater(ab, thr, out=m1)
        if cut.ties > 0:
            tied = np.flatnonzero(ab == thr)[: cut.ties]
            m1[tied] = True
            cut.ties -= tied.size
    np.multiply(t, m1, out=t)


def _trim_blocked(row: torch.Tensor, density: float, ws: Workspace, tie_break: str = "index") -> bool:
    """Per-tensor top-k trim of one large float32 row in place, block by block; False if it must fall back.

    Same threshold as :func:`_threshold` (sample bracket, exact rank inside it), but |tau| and the masks live in
    cache-sized blocks, so no whole-tensor scratch buffer exists (peak memory stays at the base and the K task
    vectors) and every pass after the first read runs in cache. Falls back (returns False, row untouched)
    when the bracket misses, or when entries tied at the threshold straddle the cut and ``tie_break`` is not
    ``"index"`` (which keeps the lowest-index tied entries, as :func:`magnitude_mask` does).
    """
    t = _np(row)
    n = t.size
    k = max(1, int(density * n))
    finder = CutFinder(np.abs(t[sample_positions(n, k)]), n, k, ws)
    if not finder.ok:
        return False
    a = ws.array("blk_abs_in", _BLOCK)
    for s in range(0, n, _BLOCK):
        c = min(_BLOCK, n - s)
        np.abs(t[s : s + c], out=a[:c])
        finder.add(a[:c])
    cut = finder.finish()
    if cut is None or (cut.ties is not None and tie_break != "index"):
        return False
    for s in range(0, n, _BLOCK):
        apply_cut(t[s : s + _BLOCK], cut, ws)
    return True


def trim_stack(
    stack: torch.Tensor,
    densities: torch.Tensor,
    thresholds: torch.Tensor | None = None,
    ws: Workspace | None = None,
    tie_break: str = "index",
    cuts: Sequence[Cut | None] | None = None,
) -> torch.Tensor:
    """Zero all but the kept entries of each task vector in ``stack`` ([K, ...]), in place; returns ``stack``.

    With ``thresholds`` (one per source, from :func:`global_thresholds`) entries with |tau| >= threshold are kept
    (whole-model scope); otherwise the per-tensor top-k of each row. ``cuts`` (one per source, None: keep all):
    the per-tensor top-k found beforehand over the whole tensor, when ``stack`` is one row block of it.
    """
    ws = ws or Workspace()
    fast = stack.dtype == torch.float32 and stack.is_contiguous()
    for i in range(stack.shape[0]):
        row = stack[i]
        if cuts is not None and thresholds is None:
            if cuts[i] is not None:
                apply_cut(_np(row), cuts[i], ws)
        elif thresholds is not None:
            a = torch.abs(row, out=ws.get("abs", row.shape))
            row.mul_(torch.ge(a, thresholds[i], out=ws.get("keep", row.shape, torch.bool)))
        elif fast and float(densities[i]) < 1.0 and row.numel() > 1 << 17 and _trim_blocked(
            row, float(densities[i]), ws, tie_break
        ):
            continue
        elif float(densities[i]) < 1.0:
            # numpy multiplies by a boolean mask in one vectorised pass (torch's mixed-dtype mul is ~5x slower)
            mask = magnitude_mask(row, float(densities[i]), ws, tie_break)
            if fast:
                r = _np(row)
                np.multiply(r, _np(mask), out=r)
            else:
                row.mul_(mask)
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
