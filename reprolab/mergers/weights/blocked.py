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

Mid-size trimmed tensors (:func:`route` returns ``"held"``: 1 MiB up to the large threshold) take the same two
passes over one (K + 1) x n block-major buffer read once, so the cut search does not read the files twice.
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
HOLD_MIN_BYTES = 1 << 20  # from this size up to LARGE_BYTES, a trimmed tensor's blocks are held in memory
BLOCK_ENTRIES = 1 << 18  # entries per row block and source (1 MiB: the K + 2 blocks stay in cache)


def sum_finite(t: torch.Tensor) -> bool:
    """Whether the sum of ``t`` is finite (a NaN or inf anywhere makes it non-finite: one cheap pass)."""
    # numpy for float32: single-threaded, so no OpenMP worker spins on a busy machine for a cheap reduction
    if t.dtype == torch.float32 and t.is_contiguous():
        with np.errstate(over="ignore", invalid="ignore"):
            return bool(np.isfinite(t.reshape(-1).numpy().sum()))
    return bool(torch.isfinite(t.sum()))


def any_nonzero(t: torch.Tensor) -> bool:
    """Whether the contiguous float32 tensor ``t`` has a non-zero entry; stops at the first non-zero chunk.

    ``np.any`` reads the whole array even when its first entry decides; a task vector is almost never zero, so
    looking at a small leading chunk first usually settles it.
    """
    flat = t.reshape(-1).numpy()
    return bool(np.any(flat[:4096])) or bool(np.any(flat[4096:]))


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


def route(method: MergeMethod, base: Any, sources: Sequence[Any], name: str, work: torch.dtype,
          trims: bool) -> str | None:
    """How tensor ``name`` is merged: ``"rows"`` (row blocks read from the files in both passes: a large tensor),
    ``"held"`` (row blocks read once and held in memory for the second pass: a mid-sized tensor with a per-tensor
    trim, where the whole-tensor path would make separate passes over memory for the finite check, the cut
    search, the cut and the mix), or None (the whole-tensor path). Only for a row-blocked method on float32
    tensors stored in safetensors files by every model."""
    if not method.row_blocks or method.stochastic or method.needs_fisher or work != torch.float32:
        return None
    models = [base, *sources]
    if not all(isinstance(c, Checkpoint) and c.has(name) and c.on_disk_f32(name) for c in models):
        return None
    info = base.info(name)
    if len(info.shape) < 1:
        return None
    if info.nbytes > LARGE_BYTES:
        return "rows"
    if trims and method.uses_task_vectors and info.nbytes >= HOLD_MIN_BYTES:
        return "held"
    return None


def held_blocks(held: np.ndarray, shape: tuple[int, ...], k: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(lo, hi, block)`` per row block, ``block`` the ``[(K + 1) * (hi - lo)]`` slice of ``held`` that holds
    the base's entries ``[lo, hi)`` then each task vector's: block-major, so each block is contiguous."""
    for lo, hi in _row_blocks(shape):
        yield lo, hi, held[lo * (k + 1) : hi * (k + 1)]


def _hold(base: Checkpoint, sources: Sequence[Checkpoint], name: str, held: np.ndarray) -> None:
    """Read the base and the task vectors of tensor ``name`` into ``held`` (see :func:`held_blocks`)."""
    binfo = base.info(name)
    for lo, hi, blk in held_blocks(held, binfo.shape, len(sources)):
        m = hi - lo
        b = read_range(binfo, lo, hi, torch.from_numpy(blk[:m]))
        for i, s in enumerate(sources):
            s.subtract_range(name, b, torch.from_numpy(blk[(1 + i) * m : (2 + i) * m]), lo, hi)


def _held_positions(pos: np.ndarray, shape: tuple[int, ...], k: int, i: int) -> np.ndarray:
    """Where the flat entries ``pos`` of task vector ``i`` lie in a held buffer (see :func:`held_blocks`)."""
    step, n = _block_step(shape)
    lo = pos - pos % step
    return lo * (k + 1) + (1 + i) * np.minimum(step, n - lo) + (pos - lo)


def _block_step(shape: tuple[int, ...]) -> tuple[int, int]:
    """(entries per row block: whole rows, about BLOCK_ENTRIES; entries of the tensor)."""
    row = int(np.prod(shape[1:], dtype=np.int64))
    return max(1, BLOCK_ENTRIES // max(row, 1)) * max(row, 1), shape[0] * row


def _row_blocks(shape: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """Flat entry ranges ``[lo, hi)`` of whole rows, about BLOCK_ENTRIES each, in index order."""
    step, n = _block_step(shape)
    for lo in range(0, n, step):
        yield lo, min(n, lo + step)


def find_cuts(
    base: Checkpoint,
    sources: Sequence[Checkpoint],
    name: str,
    densities: Sequence[float] | None,
    ws: Workspace,
    tie_break: str,
    held: np.ndarray | None = None,
) -> list[Cut | None] | None:
    """Per source, the per-tensor top-k cut of its task vector (None where ``density`` is 1 or no trim applies);
    None when this tensor must take the whole-tensor path (see the module doc).

    With ``held`` (``(K + 1) x n`` float32 entries), the base and the task vectors are first read into it
    (:func:`held_blocks`), and the sample and the counting pass read them there, not from the files.
    """
    k_src = len(sources)
    if densities is None:
        return [None] * k_src
    binfo = base.info(name)
    n = binfo.numel
    if held is not None:
        _hold(base, sources, name, held)
    finders: list[CutFinder | None] = []
    base_samples: dict[int, np.ndarray] = {}
    for i, (s, d) in enumerate(zip(sources, densities, strict=True)):
        if d >= 1.0:
            finders.append(None)
            continue
        k = max(1, int(d * n))
        pos = sample_positions(n, k)
        if held is not None:
            tau = held[_held_positions(pos, binfo.shape, k_src, i)]
        else:
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
    if held is not None:
        for lo, hi, blk in held_blocks(held, binfo.shape, k_src):
            m = hi - lo
            a = ws.array("rb_abs", m)
            for i, finder in enumerate(finders):
                if finder is not None:
                    np.abs(blk[(1 + i) * m : (2 + i) * m], out=a)
                    finder.add(a)
    else:
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
    held: np.ndarray | None = None,
) -> Iterator[torch.Tensor]:
    """The merged row blocks of tensor ``name`` (float32), in order; updates ``identical`` (source == base) as the
    engine's loop does, and checks every block for non-finite values, naming the model. With ``held`` (filled by
    :func:`find_cuts`) the blocks are taken from it, and merged in place there."""
    binfo = base.info(name)
    k = len(sources)
    row = max(1, int(np.prod(binfo.shape[1:], dtype=np.int64)))
    for lo, hi in _row_blocks(binfo.shape):
        bshape = ((hi - lo) // row, *binfo.shape[1:])
        if held is not None:
            blk = torch.from_numpy(held[lo * (k + 1) : hi * (k + 1)])
            b, stack = blk[: hi - lo].view(bshape), blk[hi - lo :].view(k, *bshape)
        else:
            b = read_range(binfo, lo, hi, ws.get("rb_base", bshape))
            stack = ws.get("rb_stack", (k, *bshape))
        if check:
            require_finite(b, name, f"the base {base.path}")
        for i, s in enumerate(sources):
            if method.uses_task_vectors:
                if held is None:
                    s.subtract_range(name, b, stack[i], lo, hi)
                if check and not sum_finite(stack[i]):
                    require_finite(
                        read_range(s.info(name), lo, hi, ws.get("rb_check", bshape)), name, str(s.path)
                    )
                if identical[i] and any_nonzero(stack[i]):
                    identical[i] = False
            else:
                read_range(s.info(name), lo, hi, stack[i])
                if check:
                    require_finite(stack[i], name, str(s.path))
        ctx = TensorContext(name=name, ws=ws, cuts=cuts, **ctx_extra)
        out = method.fn(b, stack, weights, params, ctx)
        yield add_base(out, b, method, ctx)
