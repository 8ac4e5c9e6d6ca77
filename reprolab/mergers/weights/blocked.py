"""Row-blocked merge of one large float32 tensor streamed from checkpoints on disk.

Why: the engine's tensor-by-tensor loop holds the base, the K task vectors and the result of the current
tensor, so peak memory is about (K + 2) x the largest tensor, and in a language model that is the embedding or
the LM head (32000 x 768 float32 = 98 MB each in the benchmark), many times any other tensor. A method that
declares ``row_blocks`` is elementwise once its per-tensor trim is known, so such a tensor is merged in two
passes over the files instead:

1. per source with ``density < 1``, the exact top-k cut over the whole tensor: a seeded sample read at a few
   positions brackets the k-th largest |tau|, one streamed pass counts and collects (:class:`sparsify.CutFinder`);
2. row block by row block: the base block, the K task-vector blocks (read and subtracted in one pass), the
   method on that block with the cuts in ``ctx.cuts``, the base added, the block handed to the writer.

Peak memory is then (K + 2) row blocks plus the collected bracket entries. The result is bit-identical to the
whole-tensor path (the same float32 operations on every entry, the same kept entries, ties at the threshold
kept lowest index first); where it could not be (the sample's bracket missed, or tied entries straddle the cut
under ``tie_break: mergekit``, which needs a whole-tensor argsort) :func:`find_cuts` returns None and the engine
takes the whole-tensor path for that tensor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reprolab.mergers.weights.io import Checkpoint, gather_f32, read_range
from reprolab.mergers.weights.registry import MergeMethod, TensorContext, Workspace
from reprolab.mergers.weights.sparsify import Cut, CutFinder, sample_positions

LARGE_BYTES = 16 << 20  # a float32 tensor above this size is merged in row blocks
BLOCK_ENTRIES = 1 << 18  # entries per row block and source (1 MiB: the K + 2 blocks stay in cache)


def sum_finite(t: torch.Tensor) -> bool:
    """Whether the sum of ``t`` is finite (a NaN or inf anywhere makes it non-finite: one cheap pass)."""
    # numpy for float32: single-threaded, so no OpenMP worker spins on a busy machine for a cheap reduction
    if t.dtype == torch.float32 and t.is_contiguous():
        with np.errstate(over="ignore", invalid="ignore"):
            return bool(np.isfinite(t.reshape(-1).numpy().sum()))
    return bool(torch.isfinite(t.sum()))


def require_finite(t: torch.Tensor, name: str, where: str) -> None:
    # A sum can overflow on finite values, so the exact check decides, run only on suspicion.
    if t.is_floating_point() and not sum_finite(t) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"tensor {name!r} in {where} has non-finite values (NaN or inf)")


def add_base(out: torch.Tensor, base: torch.Tensor, method: MergeMethod, ctx: TensorContext) -> torch.Tensor:
    """A task-vector method's result plus the base (the merged weights); other results pass unchanged."""
    if not method.uses_task_vectors or ctx.returns_weights:
        return out
    if out.dtype == torch.float32 and out.is_contiguous() and base.is_contiguous():
        np.add(out.reshape(-1).numpy(), base.reshape(-1).numpy(), out=out.reshape(-1).numpy())
        return out
    return out.add_(base) if out.dtype == torch.float32 else out + base


def eligible(method: MergeMethod, base: Any, sources: Sequence[Any], name: str, work: torch.dtype) -> bool:
    """Whether tensor ``name`` is merged in row blocks: large, float32 on disk in every model, a row-blocked method."""
    if not method.row_blocks or method.stochastic or method.needs_fisher or work != torch.float32:
        return False
    models = [base, *sources]
    if not all(isinstance(c, Checkpoint) and c.has(name) and c.on_disk_f32(name) for c in models):
        return False
    info = base.info(name)
    return len(info.shape) >= 1 and info.nbytes > LARGE_BYTES


def _row_blocks(shape: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """Flat entry ranges ``[lo, hi)`` of whole rows, about BLOCK_ENTRIES each, in index order."""
    row = int(np.prod(shape[1:], dtype=np.int64))
    step = max(1, BLOCK_ENTRIES // max(row, 1)) * row
    n = shape[0] * row
    for lo in range(0, n, step):
        yield lo, min(n, lo + step)


def find_cuts(
    base: Checkpoint,
    sources: Sequence[Checkpoint],
    name: str,
    densities: Sequence[float] | None,
    ws: Workspace,
    tie_break: str,
) -> list[Cut | None] | None:
    """Per source, the per-tensor top-k cut of its task vector (None where ``density`` is 1 or no trim applies);
    None when this tensor must take the whole-tensor path (see the module doc)."""
    k_src = len(sources)
    if densities is None:
        return [None] * k_src
    binfo = base.info(name)
    n = binfo.numel
    finders: list[CutFinder | None] = []
    base_samples: dict[int, np.ndarray] = {}
    for s, d in zip(sources, densities, strict=True):
        if d >= 1.0:
            finders.append(None)
            continue
        k = max(1, int(d * n))
        pos = sample_positions(n, k)
        if k not in base_samples:
            base_samples[k] = gather_f32(binfo, pos)
        tau = gather_f32(s.info(name), pos)
        np.subtract(tau, base_samples[k], out=tau)
        finder = CutFinder(np.abs(tau), n, k, ws)
        if not finder.ok:
            return None
        finders.append(finder)
    if all(f is None for f in finders):
        return [None] * k_src
    for lo, hi in _row_blocks(binfo.shape):
        b = read_range(binfo, lo, hi, ws.get("rb_base", (hi - lo,)))
        tau = ws.get("rb_tau", (hi - lo,))
        for s, finder in zip(sources, finders, strict=True):
            if finder is not None:
                s.subtract_range(name, b, tau, lo, hi)
                a = tau.numpy()
                np.abs(a, out=a)
                finder.add(a)
    cuts = [f.finish() if f is not None else None for f in finders]
    if any(f is not None and c is None for f, c in zip(finders, cuts, strict=True)):
        return None
    if tie_break != "index" and any(c is not None and c.ties is not None for c in cuts):
        return None
    return cuts


@dataclass
class RowBlocks:
    """A merged tensor handed over as its row blocks in order (each a workspace view, valid until the next)."""

    name: str
    shape: tuple[int, ...]
    parts: Iterator[torch.Tensor]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.parts


def merge_rows(
    base: Checkpoint,
    sources: Sequence[Checkpoint],
    name: str,
    method: MergeMethod,
    weights: torch.Tensor,
    params: dict[str, Any],
    cuts: list[Cut | None],
    ctx_extra: dict[str, Any],
    identical: list[bool],
    check: bool,
    ws: Workspace,
) -> Iterator[torch.Tensor]:
    """The merged row blocks of tensor ``name`` (float32), in order; updates ``identical`` (source == base) as the
    engine's loop does, and checks every block for non-finite values, naming the model."""
    binfo = base.info(name)
    k = len(sources)
    for lo, hi in _row_blocks(binfo.shape):
        rows = (hi - lo) // max(1, int(np.prod(binfo.shape[1:], dtype=np.int64)))
        bshape = (rows, *binfo.shape[1:])
        b = read_range(binfo, lo, hi, ws.get("rb_base", bshape))
        if check:
            require_finite(b, name, f"the base {base.path}")
        stack = ws.get("rb_stack", (k, *bshape))
        for i, s in enumerate(sources):
            if method.uses_task_vectors:
                s.subtract_range(name, b, stack[i], lo, hi)
                if check and not sum_finite(stack[i]):
                    require_finite(
                        read_range(s.info(name), lo, hi, ws.get("rb_check", bshape)), name, str(s.path)
                    )
                if identical[i] and bool(np.any(stack[i].numpy())):
                    identical[i] = False
            else:
                read_range(s.info(name), lo, hi, stack[i])
                if check:
                    require_finite(stack[i], name, str(s.path))
        ctx = TensorContext(name=name, ws=ws, cuts=cuts, **ctx_extra)
        out = method.fn(b, stack, weights, params, ctx)
        yield add_base(out, b, method, ctx)
