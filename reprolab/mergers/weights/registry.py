"""One registry, one signature for every weight-space merge method (mergekit-like).

Every method is ``fn(base, stack, weights, params, ctx) -> Tensor`` on one tensor, in float32:

- ``base``: the *pretrained* tensor;
- ``stack``: ``[K, *shape]``; the task vectors ``theta_i - theta_base`` when ``uses_task_vectors`` (the engine
  computes them, so no method can take them against the wrong model), otherwise the source weights;
- ``weights``: ``[K]`` per-source weights; ``params``: the method's parameters, per-source ones as ``[K]`` tensors;
- ``ctx``: the tensor's name and what a method may need beyond the tensor (a seeded generator, per-source
  whole-model trim thresholds, per-source Fisher diagonals).

A task-vector method returns the merged task vector (the engine adds the base); a weight method returns the
merged weights. Input roles follow mergekit's contracts: ``needs_base`` (a weight method that reads the base),
``optional_base`` (a named base is the origin; ``ctx.has_base`` says whether there is one), ``base_is_source``
(a named base is merged as one more model), ``n_sources`` / ``min_sources`` (counted besides the base). Methods that need a whole-model pass first (global trim) declare ``needs_global_threshold``.
A method declares ``row_blocks`` when it is elementwise over entries once its per-tensor magnitude trim (by its
``density``, unless ``trim_scope`` is ``model``) is given as ``ctx.cuts``: the engine may then merge a large
tensor in row blocks (:mod:`blocked`), calling it once per block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


class Workspace:
    """Reusable scratch buffers, one per key, grown to the largest tensor seen.

    Streaming a model allocates the same few large buffers for every tensor; fresh allocations of that size
    are page-faulted in each time (the slowest part of a naive merge). Views handed out stay valid only until
    the same key is requested again.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._arrays: dict[tuple[str, torch.dtype], np.ndarray] = {}  # numpy views of whole buffers

    def get(self, key: str, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n = 1
        for s in shape:
            n *= int(s)
        buf = self._bufs.get((key, dtype))
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype)
            self._bufs[(key, dtype)] = buf
            self._arrays.pop((key, dtype), None)
        return buf[:n].view(tuple(shape))

    def array(self, key: str, n: int, dtype: torch.dtype = torch.float32) -> np.ndarray:
        """``get(key, (n,), dtype)`` as a 1-D numpy array (the same memory): for loops over cache-sized blocks,
        where torch's per-call view overhead would cost more than the block's arithmetic."""
        arr = self._arrays.get((key, dtype))
        if arr is None or arr.size < n:
            self.get(key, (n,), dtype)
            arr = self._arrays[(key, dtype)] = self._bufs[(key, dtype)].numpy()
        return arr[:n]


@dataclass
class TensorContext:
    name: str = ""
    ws: Workspace = field(default_factory=Workspace)
    generator: torch.Generator | None = None
    thresholds: torch.Tensor | None = None  # [K] per-source magnitude thresholds (trim over the whole model)
    fisher: torch.Tensor | None = None  # [K, *shape] diagonal Fisher of each source
    extra: dict[str, Any] = field(default_factory=dict)
    # 16-bit dtype in which mergekit-family methods do their arithmetic (native.py); None: float32
    arith_dtype: torch.dtype | None = None
    returns_weights: bool = False  # set by a task-vector method that returned merged weights, not a task vector
    cuts: list[Any] | None = None  # [K] per-tensor trims (sparsify.Cut) found over the whole tensor: ``stack`` is a row block
    has_base: bool = True  # False when the config names no base_model (``base`` is then the first source)
    weight_values: tuple[float, ...] = ()  # the per-source weights as given (Python floats, before float32)


MergeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Mapping[str, Any], TensorContext], torch.Tensor]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: MergeFn
    uses_task_vectors: bool
    defaults: Mapping[str, Any]
    per_source: tuple[str, ...] = ()  # parameters that may differ per source (mergekit "tensor parameters")
    needs_global_threshold: bool = False  # True when params decide it: see global_trim()
    needs_fisher: bool = False
    stochastic: bool = False
    doc: str = ""
    needs_base: bool = False  # a weight method that reads the base besides the sources (mergekit's nearswap)
    n_sources: int | None = None  # exact number of sources the method takes, when fixed
    row_blocks: bool = False  # elementwise given ctx.cuts: a large tensor may be merged in row blocks (module doc)
    optional_base: bool = False  # a weight method for which a given base_model is the origin, not a source
    base_is_source: bool = False  # mergekit merges a given base_model as one more input (its contract ignores bases)
    min_sources: int = 1
    rules: Mapping[str, Any] = field(default_factory=dict)  # params.py rules that differ for this method

    def resolve(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults overlaid with ``params``; unknown names are errors (a typo must not be ignored)."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults) - ({"weight"} & set(self.per_source)))
        if unknown:
            raise ValueError(f"merge method {self.name!r}: unknown parameter(s) {unknown}; known: {sorted(self.defaults)}")
        out = dict(self.defaults)
        out.update({k: v for k, v in params.items() if k != "weight"})
        missing = sorted(k for k, v in out.items() if v is None)
        if missing:
            raise ValueError(f"merge method {self.name!r} needs parameter(s) {missing}")
        return out

    @property
    def separates_base(self) -> bool:
        """A given base is read apart from the sources (task vectors, a base the method reads, an optional base
        that is the origin), so a base listed among the models is the base, not one more source."""
        return self.uses_task_vectors or self.needs_base or self.optional_base

    def global_trim(self, params: Mapping[str, Any]) -> bool:
        return self.needs_global_threshold and params.get("trim_scope", "tensor") == "model"


_METHODS: dict[str, MergeMethod] = {}


def register(
    name: str,
    *,
    uses_task_vectors: bool,
    defaults: Mapping[str, Any] | None = None,
    per_source: Sequence[str] = (),
    needs_global_threshold: bool = False,
    needs_fisher: bool = False,
    stochastic: bool = False,
    needs_base: bool = False,
    n_sources: int | None = None,
    row_blocks: bool = False,
    optional_base: bool = False,
    base_is_source: bool = False,
    min_sources: int = 1,
    rules: Mapping[str, Any] | None = None,
) -> Callable[[MergeFn], MergeFn]:
    def deco(fn: MergeFn) -> MergeFn:
        if name in _METHODS:
            raise ValueError(f"merge method {name!r} registered twice")
        _METHODS[name] = MergeMethod(
            name, fn, uses_task_vectors, dict(defaults or {}), tuple(per_source), needs_global_threshold,
            needs_fisher, stochastic, (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
            needs_base, n_sources, row_blocks, optional_base, base_is_source, min_sources, dict(rules or {}),
        )
        return fn

    return deco


def get_method(name: str) -> MergeMethod:
    from reprolab.mergers.weights import methods  # noqa: F401  (registers the built-in methods)

    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown merge method {name!r}; known: {sorted(_METHODS)}") from None


def list_methods() -> list[str]:
    from reprolab.mergers.weights import methods  # noqa: F401

    return sorted(_METHODS)
