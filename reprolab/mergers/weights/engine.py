"""The merge engine: tensor by tensor over a base and K sources, in memory or streaming from disk.

One loop serves both: in-memory state dicts and on-disk checkpoints are both "tensor sources" (``keys``,
``info``, ``get``). Per tensor it holds the base, a ``[K, *shape]`` float32 stack (read straight into place,
then turned into task vectors in place) and the result, so peak memory is about (K + 2) x the largest tensor;
when merging checkpoints on disk, tensors above ``blocked.LARGE_BYTES`` (an LLM's embedding and LM head) are
merged in row blocks where the method allows it (:mod:`blocked`), so they do not count.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from reprolab.mergers.weights import blocked
from reprolab.mergers.weights.blocked import add_base, any_nonzero, require_finite, sum_finite
from reprolab.mergers.weights.io import Checkpoint, StreamingWriter, inside_folder
from reprolab.mergers.weights.native import SIXTEEN_BIT
from reprolab.mergers.weights.output import OutputFolder, check_separate
from reprolab.mergers.weights.parallel import map_tensors, merge_threads
from reprolab.mergers.weights.registry import MergeMethod, TensorContext, Workspace, get_method
from reprolab.mergers.weights.sparsify import check_density, global_thresholds
from reprolab.mergers.weights.task_vectors import BaseIsSourceError

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class TensorSource(Protocol):
    def keys(self) -> list[str]: ...
    def get(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor: ...
    def has(self, name: str) -> bool: ...


@dataclass(frozen=True)
class _Info:
    dtype: torch.dtype
    shape: tuple[int, ...]


class StateDictSource:
    """An in-memory state dict seen through the same interface as :class:`io.Checkpoint`."""

    def __init__(self, sd: Mapping[str, torch.Tensor], label: str = "state dict") -> None:
        self.sd = sd
        self.path = label

    def keys(self) -> list[str]:
        return list(self.sd)

    def info(self, name: str) -> _Info:
        t = self.sd[name]
        return _Info(t.dtype, tuple(t.shape))

    def get(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        t = self.sd[name]
        return t if out is None else out.copy_(t)

    def has(self, name: str) -> bool:
        return name in self.sd


def _label(src: Any) -> str:
    return str(getattr(src, "path", src))


def _tensor_seed(seed: int, name: str) -> int:
    # Per-tensor generator seeds depend on the name, not the iteration order, so a streamed and an in-memory
    # merge draw the same DARE masks.
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _validate(base: Any, sources: Sequence[Any]) -> list[str]:
    if not sources:
        raise ValueError("merge needs at least one source model (the source list is empty)")
    names = base.keys()
    bset = set(names)
    for src in sources:
        sset = set(src.keys())
        missing, extra = sorted(bset - sset), sorted(sset - bset)
        # Integer buffers (e.g. BERT's embeddings.position_ids) are not learned and newer transformers no longer
        # save them; they come from the base, so a source may omit them.
        missing = [k for k in missing if base.info(k).dtype in _FLOATS]
        if missing:
            raise ValueError(f"{_label(src)} is missing tensor(s) {missing[:5]} present in the base {_label(base)}")
        if extra:
            raise ValueError(f"{_label(src)} has tensor(s) {extra[:5]} absent from the base {_label(base)}")
        for k in names:
            if k not in sset:
                continue
            bi, si = base.info(k), src.info(k)
            if tuple(si.shape) != tuple(bi.shape):
                raise ValueError(
                    f"tensor {k!r}: shape {tuple(si.shape)} in {_label(src)} differs from {tuple(bi.shape)} in the base "
                    f"{_label(base)} (a different vocabulary or architecture?)"
                )
            if (bi.dtype in _FLOATS) != (si.dtype in _FLOATS):
                raise ValueError(f"tensor {k!r}: {_label(src)} has dtype {si.dtype}, the base {bi.dtype}")
    return names


def _check_dtypes(base: Any, sources: Sequence[Any], names: Sequence[str], compute_dtype: torch.dtype | None) -> None:
    if compute_dtype is not None:
        return
    for k in names:
        dts = {base.info(k).dtype, *(s.info(k).dtype for s in sources if s.has(k))}
        if len(dts) > 1 and dts <= set(_FLOATS):
            raise ValueError(
                f"tensor {k!r} has mixed dtypes {sorted(map(str, dts))} across models; set `dtype` explicitly to merge them"
            )


def _read_float(src: Any, name: str, out: torch.Tensor, work: torch.dtype, ws: Workspace) -> torch.Tensor:
    """Read a float tensor into the float32 buffer ``out``, rounding through ``work`` (the merge dtype)."""
    dt = src.info(name).dtype
    if dt == torch.float32 and work == torch.float32:
        return src.get(name, out=out)
    raw = src.get(name, out=ws.get(f"raw_{dt}", out.shape, dt)) if isinstance(src, Checkpoint) else src.get(name)
    return out.copy_(raw.to(work))


@dataclass
class MergePlan:
    """Everything the engine needs besides the models (resolved from a config or from arguments)."""

    method: MergeMethod
    params: dict[str, Any]
    weights: torch.Tensor  # [K]
    per_source: dict[str, torch.Tensor]  # per-source parameter -> [K]
    seed: int = 0
    has_base: bool = True  # False: no base model was named (methods with an optional base work on the weights)
    weight_values: tuple[float, ...] | None = None  # ``weights`` as given, before rounding to float32

    @classmethod
    def build(
        cls,
        method: str | MergeMethod,
        k: int,
        weights: Sequence[float] | None = None,
        params: Mapping[str, Any] | None = None,
        per_source_params: Sequence[Mapping[str, Any]] | None = None,
        seed: int = 0,
    ) -> MergePlan:
        m = get_method(method) if isinstance(method, str) else method
        if k < 1:
            raise ValueError("merge needs at least one source model (the source list is empty)")
        resolved = m.resolve(params)
        per = [dict(p) for p in (per_source_params or [{} for _ in range(k)])]
        if len(per) != k:
            raise ValueError(f"{len(per)} per-source parameter sets for {k} sources")
        w = [float(x) for x in (weights if weights is not None else [p.get("weight", (params or {}).get("weight", 1.0)) for p in per])]
        if len(w) != k:
            raise ValueError(f"{len(w)} weights for {k} sources")
        if any(x != x or abs(x) == float("inf") for x in w):
            raise ValueError(f"weights must be finite, got {w}")
        with np.errstate(over="ignore"):  # the merge sums weights in float32: past its range, a normalised
            total = np.abs(np.asarray(w, dtype=np.float32)).sum(dtype=np.float32)  # merge divides by inf -> 0
        if not np.isfinite(total):
            raise ValueError(f"weights {w} are too large: their sum overflows float32, in which the merge computes")
        for i, p in enumerate(per):
            unknown = sorted(set(p) - set(m.per_source))
            if unknown:
                raise ValueError(f"source {i}: unknown per-model parameter(s) {unknown} for {m.name!r}; known: {list(m.per_source)}")
        per_t: dict[str, torch.Tensor] = {}
        for key in m.per_source:
            if key == "weight":
                continue
            vals = [float(p.get(key, resolved[key])) for p in per]
            if key == "density":
                vals = [check_density(v, f"density of source {i}") for i, v in enumerate(vals)]
            # float64: the Python floats the config gave (mergekit counts int(density * n) with them; a float32
            # 0.9 is 0.89999998, one entry fewer kept per 25 M)
            per_t[key] = torch.tensor(vals, dtype=torch.float64)
        if "density" in resolved and "density" not in per_t:
            check_density(resolved["density"])
        if m.uses_task_vectors is False and m.name == "linear" and resolved.get("normalize") and abs(sum(w)) < 1e-12:
            raise ValueError("linear merge with normalize needs weights that do not sum to zero")
        return cls(m, resolved, torch.tensor(w, dtype=torch.float32), per_t, seed, weight_values=tuple(w))

    def tensor_params(self) -> dict[str, Any]:
        out = dict(self.params)
        out.update(self.per_source)
        return out


def _stacks(base: Any, sources: Sequence[Any], names: Sequence[str]) -> Callable[[], Iterator[torch.Tensor]]:
    def gen() -> Iterator[torch.Tensor]:
        for k in names:
            if base.info(k).dtype not in _FLOATS:
                continue
            b = base.get(k).to(torch.float32)
            yield torch.stack([s.get(k).to(torch.float32) - b for s in sources])

    return gen


def _trim_densities(plan: MergePlan, params: Mapping[str, Any], k: int) -> list[float] | None:
    """Per-source densities of a per-tensor magnitude trim (row-blocked methods); None when none applies."""
    if "density" not in params or plan.method.global_trim(params):
        return None
    d = params["density"]
    return [float(x) for x in d] if isinstance(d, torch.Tensor) else [float(d)] * k


class TensorMerger:
    """Merges one tensor at a time of a base and K sources under a plan: the body of the engine's loop.

    Shared by the sequential generator :func:`merge_iter` and the threaded on-disk merge of
    :func:`merge_checkpoints` (one :class:`Workspace` per thread). A tensor's result depends only on its name,
    never on the order in which tensors are merged (stochastic methods seed a generator per tensor name).

    Raises ValueError (naming tensor and model) on any mismatch or non-finite value.
    """

    def __init__(
        self,
        base: Any,
        sources: Sequence[Any],
        plan: MergePlan,
        *,
        compute_dtype: torch.dtype | None = None,
        fisher: Sequence[Any] | None = None,
        check_finite: bool = True,
        native_arithmetic: bool = False,
        row_blocks: bool = False,
    ) -> None:
        self.names = _validate(base, sources)
        _check_dtypes(base, sources, self.names, compute_dtype)
        m = plan.method
        k = len(sources)
        if m.needs_fisher and (fisher is None or len(fisher) != k):
            raise ValueError(f"method {m.name!r} needs one Fisher diagonal per source")
        self.base, self.sources, self.plan, self.fisher = base, sources, plan, fisher
        self.compute_dtype, self.check_finite = compute_dtype, check_finite
        self.native_arithmetic, self.row_blocks = native_arithmetic, row_blocks
        self.params = params = plan.tensor_params()
        self.thresholds = None
        if m.global_trim(params):
            dens = plan.per_source["density"] if "density" in plan.per_source else torch.full((k,), float(params["density"]), dtype=torch.float64)
            self.thresholds = global_thresholds(_stacks(base, sources, self.names), dens.tolist())
        self.weight_values = tuple(plan.weights.tolist()) if plan.weight_values is None else plan.weight_values
        self.work = compute_dtype or torch.float32
        self.cut_dens = _trim_densities(plan, params, k)

    def merge(
        self, name: str, ws: Workspace, identical: list[bool], *, whole_large: bool = True
    ) -> torch.Tensor | blocked.RowBlocks | None:
        """Tensor ``name`` merged (float32, or the base's tensor for non-float ones), possibly a view of ``ws``.

        ``identical[i]`` is cleared when source i differs from the base in this tensor. With ``row_blocks``, a
        large float32 tensor on disk may come as a :class:`blocked.RowBlocks`, to be consumed before ``ws`` is
        used again. With ``whole_large=False``, returns None instead of merging a float tensor above
        ``blocked.LARGE_BYTES`` whole (its row blocks could not be used): the caller merges it where memory
        allows.
        """
        base, sources, m, params, work = self.base, self.sources, self.plan.method, self.params, self.work
        k = len(sources)
        binfo = base.info(name)
        route = self.route(name)
        if route is not None:
            held = ws.array("held", (k + 1) * binfo.numel) if route == "held" else None
            cuts = blocked.find_cuts(base, sources, name, self.cut_dens, ws, str(params.get("tie_break", "index")),
                                     held)
            if cuts is not None:
                extra = {"thresholds": self.thresholds} if self.thresholds is not None else {}
                parts = blocked.merge_rows(base, sources, name, m, self.plan.weights, params, cuts, extra, identical,
                                           self.check_finite, ws, held)
                return blocked.RowBlocks(name, tuple(binfo.shape), parts)
        if not whole_large and binfo.dtype in _FLOATS and binfo.nbytes > blocked.LARGE_BYTES:
            return None
        if binfo.dtype not in _FLOATS:
            b = base.get(name)
            for s in sources:
                if s.has(name) and not torch.equal(s.get(name), b):
                    raise ValueError(f"non-float tensor {name!r} differs between {_label(s)} and the base; cannot merge it")
            return b
        shape = tuple(binfo.shape)
        b32 = _read_float(base, name, ws.get("base", shape), work, ws)
        if self.check_finite:
            require_finite(b32, name, f"the base {_label(base)}")
        stack = ws.get("stack", (k, *shape))
        # Task vectors of float32 checkpoints are computed straight from a mapping of the file (the subtraction
        # is the read: one pass less); a source equals the base exactly where its task vector is zero, and a
        # finite base with a finite task-vector sum means a finite source (the exact check runs on suspicion).
        direct = m.uses_task_vectors and work == torch.float32
        for i, s in enumerate(sources):
            if direct and isinstance(s, Checkpoint) and s.info(name).dtype == torch.float32:
                s.subtract_into(name, b32, stack[i])
                if self.check_finite and not sum_finite(stack[i]):
                    require_finite(s.get(name), name, _label(s))
                if identical[i] and any_nonzero(stack[i]):
                    identical[i] = False
                continue
            _read_float(s, name, stack[i], work, ws)
            if self.check_finite:
                require_finite(stack[i], name, _label(s))
            if identical[i] and not torch.equal(stack[i], b32):
                identical[i] = False
            if m.uses_task_vectors:
                stack[i] -= b32
        arith = (self.compute_dtype or binfo.dtype) if self.native_arithmetic else None
        ctx = TensorContext(name=name, ws=ws, arith_dtype=arith if arith in SIXTEEN_BIT else None,
                            has_base=self.plan.has_base, weight_values=self.weight_values)
        if m.stochastic:
            ctx.generator = torch.Generator().manual_seed(_tensor_seed(self.plan.seed, name))
        if self.thresholds is not None:
            ctx.thresholds = self.thresholds
        if self.fisher is not None:
            ctx.fisher = torch.stack([f.get(name).to(torch.float32) for f in self.fisher])
        out = m.fn(b32, stack, self.plan.weights, params, ctx)
        return add_base(out, b32, m, ctx)

    def route(self, name: str) -> str | None:
        """How tensor ``name`` is merged: in row blocks (``"rows"``, ``"held"``; see :func:`blocked.route`) or whole."""
        if not self.row_blocks or self.base.info(name).dtype not in _FLOATS:
            return None
        return blocked.route(self.plan.method, self.base, self.sources, name, self.work, trims=self.cut_dens is not None)

    def bounded(self, name: str) -> bool:
        """Whether merging tensor ``name`` holds at most (K + 2) buffers of ``blocked.LARGE_BYTES`` (row blocks, or
        a tensor no larger than that): such tensors may be merged on several threads at once."""
        return self.route(name) == "rows" or self.base.info(name).nbytes <= blocked.LARGE_BYTES

    def require_distinct(self, identical: Sequence[bool]) -> None:
        """Raise BaseIsSourceError when a task-vector method's base equals a source in every tensor."""
        if not self.plan.method.uses_task_vectors:
            return
        same = [_label(s) for s, flag in zip(self.sources, identical, strict=True) if flag]
        if same:
            raise BaseIsSourceError(
                f"the base model is identical to source {same[0]}: task vectors must be taken against the pretrained "
                "model, not a fine-tuned source (its task vector would be zero and it would silently drop out). "
                "Pass the pretrained checkpoint as base, or allow_source_as_base=True to do this on purpose."
            )


def merge_iter(
    base: Any,
    sources: Sequence[Any],
    plan: MergePlan,
    *,
    compute_dtype: torch.dtype | None = None,
    fisher: Sequence[Any] | None = None,
    allow_source_as_base: bool = False,
    check_finite: bool = True,
    native_arithmetic: bool = False,
    row_blocks: bool = False,
) -> Iterator[tuple[str, torch.Tensor | blocked.RowBlocks]]:
    """Yield ``(name, merged float32 tensor)`` in the base's order; non-float tensors pass through the base's.

    ``native_arithmetic``: mergekit-family methods do their arithmetic in the 16-bit dtype of the merge
    (``compute_dtype``, else the stored dtype of each tensor) as mergekit does (:mod:`native`); otherwise in float32.
    ``row_blocks``: a large float32 tensor on disk may come as a :class:`blocked.RowBlocks` (its merged row blocks
    in order, bit-identical to the whole tensor), which must be consumed before the next item is asked for.

    Raises ValueError (naming tensor and model) on any mismatch, non-finite value, or a base equal to a source.
    """
    merger = TensorMerger(base, sources, plan, compute_dtype=compute_dtype, fisher=fisher, check_finite=check_finite,
                          native_arithmetic=native_arithmetic, row_blocks=row_blocks)
    identical = [True] * len(sources)
    ws = Workspace()
    for name in merger.names:
        yield name, merger.merge(name, ws, identical)
    if not allow_source_as_base:
        merger.require_distinct(identical)


def merge_state_dicts(
    base: Mapping[str, torch.Tensor] | None,
    sources: Sequence[Mapping[str, torch.Tensor]],
    method: str = "task_arithmetic",
    weights: Sequence[float] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    per_source_params: Sequence[Mapping[str, Any]] | None = None,
    seed: int = 0,
    fisher: Sequence[Mapping[str, torch.Tensor]] | None = None,
    out_dtype: torch.dtype | None = None,
    allow_source_as_base: bool = False,
) -> dict[str, torch.Tensor]:
    """Merge in-memory state dicts. ``base`` must be the *pretrained* model (may be None for linear/fisher)."""
    if not sources:
        raise ValueError("merge needs at least one source model (the source list is empty)")
    plan = MergePlan.build(method, len(sources), weights, params, per_source_params, seed)
    plan.has_base = base is not None
    if base is None:
        if plan.method.uses_task_vectors or plan.method.needs_base:
            raise ValueError(f"method {plan.method.name!r} needs the pretrained base model")
        base = sources[0]
    srcs = [StateDictSource(s, f"source[{i}]") for i, s in enumerate(sources)]
    fis = [StateDictSource(f, f"fisher[{i}]") for i, f in enumerate(fisher)] if fisher is not None else None
    out = {}
    for name, t in merge_iter(StateDictSource(base, "base"), srcs, plan, fisher=fis, allow_source_as_base=allow_source_as_base):
        dt = out_dtype if (out_dtype is not None and t.is_floating_point()) else base[name].dtype
        out[name] = to_written(name, t, dt, copy=True)  # yielded tensors are workspace views, reused next
    return out


def merge_tensors(
    method: str,
    base: torch.Tensor | None,
    sources: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    *,
    name: str = "tensor",
    seed: int = 0,
    **params: Any,
) -> torch.Tensor:
    """Merge single tensors (convenience; whole-model trim is per tensor here)."""
    sd = merge_state_dicts(
        None if base is None else {name: base}, [{name: s} for s in sources], method, weights,
        params=params, seed=seed, allow_source_as_base=True,
    )
    return sd[name]


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".index.json")
_MODEL_CONFIG = "config.json"


def _model_files(folder: Path, rel: str = "", seen: frozenset[Path] = frozenset()) -> Iterator[tuple[str, Path]]:
    """(relative name, resolved file) of every non-weight file of a model folder, each checked to stay inside it."""
    real = folder.resolve()
    if real in seen:  # a symlink loop
        return
    for entry in sorted(folder.iterdir()):
        name = f"{rel}{entry.name}"
        if entry.name.startswith(".") or entry.name.endswith(_WEIGHT_SUFFIXES):
            continue  # dot-files (VCS, caches, reprolab's own manifest) and weights (merged, not copied)
        target = inside_folder(folder, entry.name, f"{folder}: file") if not entry.is_dir() else entry.resolve()
        if entry.is_dir():
            if real not in target.parents:
                raise ValueError(f"{folder}: folder {entry.name!r} resolves to {target}, outside the model folder; refused")
            yield from _model_files(target, f"{name}/", seen | {real})
        else:
            yield name, target


def check_model_files(folder: Path) -> None:
    """Refuse a model folder with a non-weight file (or folder) that resolves outside it (the rule of copied files),
    before a reader that follows names on its own (transformers' tokenizer loading) opens any of them."""
    for _ in _model_files(Path(folder)):
        pass


def _config_with_dtype(src: Path, dtype: torch.dtype | None, updates: Mapping[str, Any] | None = None) -> bytes:
    """The base's config.json with ``torch_dtype`` (and transformers' newer ``dtype``) set to the dtype written,
    and ``updates`` (e.g. the layer count after slices, the vocabulary size after tokenizer alignment)."""
    try:
        cfg = json.loads(src.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{src}: not valid JSON ({exc}); cannot write a config.json that states the merged dtype") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{src}: config.json must be a JSON object")
    if dtype is not None:
        name = str(dtype).removeprefix("torch.")
        cfg["torch_dtype"] = name
        if "dtype" in cfg:
            cfg["dtype"] = name
    cfg.update(updates or {})
    return (json.dumps(cfg, indent=2, sort_keys=False) + "\n").encode()


def copy_model_files(
    src: Path,
    dst: Path | OutputFolder,
    dtype: torch.dtype | None = None,
    *,
    config_updates: Mapping[str, Any] | None = None,
    skip: Collection[str] = (),
) -> list[str]:
    """Copy a model folder's non-weight files (config, tokenizer, ...) next to the merged weights.

    Every file must resolve inside ``src`` (symlinks followed); ``config.json`` states ``dtype`` (the dtype of
    the merged float tensors) and ``config_updates``; files named in ``skip`` are not copied (the merge writes
    its own). Written through ``dst``'s temporaries when it is an :class:`OutputFolder`.
    """
    src = Path(src)
    if not src.is_dir():
        return []
    names = []
    for name, file in _model_files(src):
        if name in skip:
            continue
        target = dst.temp(name) if isinstance(dst, OutputFolder) else Path(dst) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == _MODEL_CONFIG:
            target.write_bytes(_config_with_dtype(file, dtype, config_updates))
        else:
            shutil.copyfile(file, target)
        names.append(name)
    return names


def to_written(
    name: str, t: torch.Tensor, dtype: torch.dtype, merge_dtype: torch.dtype | None = None, *, copy: bool = False
) -> torch.Tensor:
    """Merged tensor ``name`` (``t``, float32 work, or a part of it) as it is written: in its output ``dtype``,
    rounded first to the merge dtype where that differs, and refused if it holds NaN or inf.

    mergekit rounds its result to the merge dtype, then casts, so ``dtype: float16`` with ``out_dtype: float32``
    writes float16 values (written unrounded, 59% of entries differed from mergekit's). The inputs are checked
    finite, so a NaN or inf comes from the merge itself (weights that cancel out, a huge weight, a result beyond
    the range of a 16-bit output dtype), and a model written with it would be silently broken."""
    if merge_dtype is not None and t.is_floating_point() and t.dtype != merge_dtype != dtype:
        t = t.to(merge_dtype)
    out = t.to(dtype, copy=copy)
    require_finite(out, name, "the merged output (from finite inputs: weights that cancel out, or values beyond "
                              "the range of the output dtype?)")
    return out


def _written_dtype(plan_shapes: Mapping[str, tuple[torch.dtype, tuple[int, ...]]]) -> torch.dtype | None:
    """The float dtype holding most parameters of the output (what ``torch_dtype`` means to transformers)."""
    count: dict[torch.dtype, int] = {}
    for dt, shape in plan_shapes.values():
        if dt in _FLOATS:
            count[dt] = count.get(dt, 0) + int(np.prod(shape, dtype=np.int64))
    return max(count, key=count.__getitem__) if count else None


def merge_checkpoints(
    base: str | os.PathLike[str],
    sources: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    plan: MergePlan,
    *,
    compute_dtype: torch.dtype | None = None,
    out_dtype: torch.dtype | None = None,
    fisher: Sequence[str | os.PathLike[str]] | None = None,
    allow_source_as_base: bool = False,
    allow_pickle: bool = False,
    max_shard_bytes: int = 5 * 1024**3,
    copy_files: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
    overwrite: bool = False,
    native_arithmetic: bool = False,
    threads: int | None = None,
) -> list[Path]:
    """Stream-merge checkpoints on disk into ``out_dir`` (a Hugging Face folder); returns the weight files.

    The output rules of :mod:`reprolab.mergers.weights.output` apply: OUT apart from every input, a non-empty
    OUT only with ``overwrite`` (replacing only an earlier reprolab merge's files), everything written under
    temporary names and renamed into place when complete. ``threads`` (default :func:`parallel.merge_threads`)
    tensors are merged at once; the output does not depend on it.
    """
    inputs = [("base model", Path(base)), *((f"source model {i}", Path(s)) for i, s in enumerate(sources)),
              *((f"Fisher file {i}", Path(f)) for i, f in enumerate(fisher or ()))]
    check_separate(Path(out_dir), inputs)
    b = Checkpoint(base, allow_pickle=allow_pickle)
    srcs = [Checkpoint(s, allow_pickle=allow_pickle) for s in sources]
    fis = [Checkpoint(f, allow_pickle=allow_pickle) for f in fisher] if fisher is not None else None
    names = _validate(b, srcs)  # before OUT is touched
    _check_dtypes(b, srcs, names, compute_dtype)

    def out_type(name: str) -> torch.dtype:
        dt = b.info(name).dtype
        return (out_dtype or dt) if dt in _FLOATS else dt

    plan_shapes = {k: (out_type(k), b.info(k).shape) for k in names}
    n_threads = merge_threads() if threads is None else threads
    if n_threads < 1:
        raise ValueError(f"threads must be >= 1, got {n_threads}")
    # Largest first: the threads stay evenly loaded to the end, and the last writes (which the commit's fsync
    # waits for) are small.
    order = sorted(names, key=lambda k: -b.info(k).nbytes)
    output = OutputFolder(out_dir, overwrite=overwrite)
    try:
        merger = TensorMerger(b, srcs, plan, compute_dtype=compute_dtype, fisher=fis, row_blocks=True,
                              native_arithmetic=native_arithmetic)
        writer = StreamingWriter(output.path, plan_shapes, max_shard_bytes=max_shard_bytes,
                                 metadata={"merged_by": "reprolab"}, output=output)

        def write(name: str, t: torch.Tensor | blocked.RowBlocks) -> None:
            dt = out_type(name)
            parts = t if isinstance(t, blocked.RowBlocks) else (t,)
            writer.write_at(name, (to_written(name, p, dt, compute_dtype) for p in parts))

        def merge_alone(name: str, ws: Workspace) -> list[bool]:
            identical = [True] * len(srcs)
            write(name, merger.merge(name, ws, identical))
            return identical

        # A large tensor whose row blocks fell through (e.g. ties straddling the cut under tie_break: mergekit)
        # is merged whole by one thread at a time, on one workspace shared for that.
        large_lock, large = threading.Lock(), {"ws": Workspace()}

        def merge_shared(name: str, ws: Workspace) -> list[bool]:
            identical = [True] * len(srcs)
            t = merger.merge(name, ws, identical, whole_large=False)
            if t is not None:
                write(name, t)
                return identical
            with large_lock:
                write(name, merger.merge(name, large["ws"], identical))
            return identical

        with writer:
            # A tensor merged whole above LARGE_BYTES (an embedding under a method without row blocks) is merged
            # alone, first, on a workspace dropped afterwards: threads never hold two such working sets at once,
            # so peak memory stays that of a one-thread merge. The rest runs on the threads.
            alone = [n for n in order if not merger.bounded(n)]
            shared = [n for n in order if merger.bounded(n)]
            count = [0]

            def on_done(_: int, name: str) -> None:
                count[0] += 1
                if progress is not None:
                    progress(count[0], len(names), name)

            flags = map_tensors(alone, merge_alone, 1, on_done)
            flags += map_tensors(shared, merge_shared, n_threads, on_done)
            large.clear()  # its buffers go before the copies and the commit
            if not allow_source_as_base:
                merger.require_distinct([all(f[i] for f in flags) for i in range(len(srcs))])
        copied = copy_model_files(Path(base), output, _written_dtype(plan_shapes)) if copy_files else []
        # weights first, then the index, then config.json: a folder with config.json is a complete merge
        output.commit(order=[*writer.names, *(n for n in copied if n == _MODEL_CONFIG)])
    except BaseException:
        output.abort()
        raise
    return writer.files
