"""Which input tensors make each output tensor: mergekit's ``slices`` / ``layer_range`` and per-tensor parameters.

mergekit plans a merge as pre-layer weights (embeddings), then the layers of each output slice in order, then
post-layer weights (final norm, LM head). Slice ``s`` with sources of ``n`` layers each writes output layers
``L_s .. L_s + n - 1`` (``L_s``: the layers of the slices before it); output layer ``L_s + o`` merges layer
``layer_range[0] + o`` of every source of the slice, with the gradient position ``t = o / (n - 1)`` (1 when
``n`` is 1). Pre-layer weights come from the first slice's sources, post-layer weights from the last's (as many
of them as the first slice has, mergekit's pairing), both at ``t = 0``. A ``models:`` config is one slice
over every layer of every model.

Layers are found from the tensor names (``<prefix>.<i>.<rest>``, e.g. ``model.layers.3.mlp.up_proj.weight``
or GPT-2's ``transformer.h.3.attn.c_attn.weight``), checked against the model's ``config.json`` layer count;
tensors outside the layers are pre-layer when they are input embeddings (token / position), post-layer
otherwise, which is mergekit's split for the Llama, Mistral, Qwen2, Phi and GPT-2 definitions.

The merge still streams tensor by tensor: each group of output tensors that share their models (the pre
weights, a slice, the post weights) is one pass of :func:`engine.merge_iter` over renamed views of the
checkpoints, with the parameters resolved for each tensor (:mod:`schedule`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reprolab.mergers.weights.engine import MergePlan
from reprolab.mergers.weights.io import Checkpoint, inside_folder
from reprolab.mergers.weights.native import check_della_range
from reprolab.mergers.weights.registry import MergeMethod
from reprolab.mergers.weights.schedule import resolve_all

_LAYER = re.compile(r"^(?P<prefix>.+?)\.(?P<index>\d+)\.(?P<rest>.+)$")
_PRE = re.compile(r"(embed_tokens|wte|wpe|word_embeddings|position_embeddings|embed_positions)")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


@dataclass(frozen=True)
class ModelLayers:
    """The layer structure of one checkpoint: ``prefix.<i>.<suffix>`` for i < n, and the other tensors."""

    prefix: str | None
    n: int
    suffixes: tuple[tuple[str, ...], ...]  # per layer, in the checkpoint's order
    pre: tuple[str, ...]
    post: tuple[str, ...]
    config_key: str | None  # the config.json key holding the layer count

    def name(self, layer: int, suffix: str) -> str:
        return f"{self.prefix}.{layer}.{suffix}"


def model_config(folder: Path) -> dict[str, Any]:
    """A model folder's config.json ({} without one); a config.json that resolves outside the folder is refused."""
    p = Path(folder) / "config.json"
    if not p.is_symlink() and not p.exists():
        return {}
    p = inside_folder(Path(folder), "config.json", f"{folder}: file")
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from None
    return cfg if isinstance(cfg, dict) else {}


def model_layers(ckpt: Checkpoint) -> ModelLayers:
    """Find the layers of ``ckpt`` from its tensor names; ValueError (naming the model) if they do not fit."""
    names = ckpt.keys()
    prefixes: dict[str, int] = {}
    for n in names:
        m = _LAYER.match(n)
        if m:
            prefixes[m["prefix"]] = prefixes.get(m["prefix"], 0) + 1
    prefix = max(prefixes, key=prefixes.__getitem__) if prefixes else None
    per: dict[int, list[str]] = {}
    others = []
    for n in names:
        m = _LAYER.match(n)
        if prefix is not None and m and m["prefix"] == prefix:
            per.setdefault(int(m["index"]), []).append(m["rest"])
        else:
            others.append(n)
    count = max(per) + 1 if per else 0
    if sorted(per) != list(range(count)):
        missing = sorted(set(range(count)) - set(per))
        raise ValueError(f"{ckpt.path}: layer(s) {missing[:5]} of {prefix}.* are missing")
    cfg = model_config(ckpt.path) if ckpt.path.is_dir() else {}
    key = next((k for k in LAYER_KEYS if isinstance(cfg.get(k), int)), None)
    if key is not None and cfg[key] != count:
        raise ValueError(
            f"{ckpt.path}: config.json says {key}={cfg[key]} but the weights hold {count} layers "
            f"({prefix}.0 .. {prefix}.{count - 1})"
        )
    return ModelLayers(
        prefix,
        count,
        tuple(tuple(per[i]) for i in range(count)),
        tuple(n for n in others if _PRE.search(n)),
        tuple(n for n in others if not _PRE.search(n)),
        key,
    )


def renamed(ckpt: Checkpoint, names: Mapping[str, str]) -> Checkpoint:
    """A view of ``ckpt`` whose tensor ``out`` is its tensor ``names[out]`` (nothing is read)."""
    view = copy.copy(ckpt)
    view.tensors = {out: ckpt.info(src) for out, src in names.items()}
    return view


@dataclass(frozen=True)
class SliceSource:
    model: Path
    layers: tuple[int, int] | None  # None: every layer (a `models:` entry)
    params: Mapping[str, Any]  # settings (schedule.py), per-model
    where: str


@dataclass(frozen=True)
class OutputSlice:
    sources: tuple[SliceSource, ...]  # every listed model, the base included
    base: Path | None
    params: Mapping[str, Any]
    where: str


@dataclass
class Entry:
    out: str
    base_in: str
    sources_in: list[str]
    t: float


@dataclass
class Group:
    """Output tensors that merge the same models: one pass of the engine."""

    base: Path
    sources: list[Path]
    source_params: list[Mapping[str, Any]]
    slice_params: Mapping[str, Any]
    entries: list[Entry] = field(default_factory=list)
    edge: bool = False  # only pre- or post-layer tensors (no layers)
    layers: list[tuple[Path, int]] = field(
        default_factory=list
    )  # per output layer: the model and layer it copies
    has_base: bool = True  # False: ``base`` is the first source (no base model for this slice)

    def same_models(self, other: Group) -> bool:
        return (self.base, self.sources, self.source_params, self.slice_params, self.has_base) == (
            other.base,
            other.sources,
            other.source_params,
            other.slice_params,
            other.has_base,
        )


def _coalesce(groups: Sequence[Group]) -> list[Group]:
    """Join neighbouring groups that merge the same models with the same settings (one engine pass each, so a
    check over a whole pass, such as "this source equals the base", sees the whole model where it can)."""
    out: list[Group] = []
    for g in groups:
        if not g.entries:
            continue
        if out and out[-1].same_models(g):
            out[-1].entries.extend(g.entries)
            out[-1].layers.extend(g.layers)
            out[-1].edge = out[-1].edge and g.edge
        else:
            out.append(g)
    return out


def _split_base(
    sl: OutputSlice, base: Path | None, separate_base: bool
) -> tuple[SliceSource | None, list[SliceSource]]:
    """(the slice's base source, its merge sources); a `models:` config's base need not be listed (mergekit adds it)."""
    if not separate_base or base is None:
        return None, list(sl.sources)
    found = [s for s in sl.sources if s.model == base]
    others = [s for s in sl.sources if s.model != base]
    if not found and all(s.layers is None for s in sl.sources):
        found = [SliceSource(base, None, {}, sl.where)]
    if not found:
        raise ValueError(
            f"{sl.where}: the method needs the base model, so list {base} among this slice's sources"
        )
    return found[0], others


def _range(s: SliceSource, layers: Callable[[Path], ModelLayers]) -> tuple[int, int]:
    n = layers(s.model).n
    if s.layers is None:
        return 0, n
    lo, hi = s.layers
    if not 0 <= lo < hi <= n:
        raise ValueError(f"{s.where}: layer_range [{lo}, {hi}] does not fit the {n} layers of {s.model}")
    return lo, hi


def _slice_group(
    sl: OutputSlice,
    base_src: SliceSource | None,
    srcs: list[SliceSource],
    first_layer: int,
    layers: Callable[[Path], ModelLayers],
) -> tuple[Group, int]:
    """The output layers ``first_layer ..`` of one slice, and how many there are."""
    ref = base_src or srcs[0]
    everyone = [ref, *srcs] if base_src else srcs
    ranges = [_range(s, layers) for s in everyone]
    lengths = [hi - lo for lo, hi in ranges]
    if len(set(lengths)) != 1:
        raise ValueError(
            f"{sl.where}: every source of a slice must give the same number of layers, got {lengths}"
        )
    n = lengths[0]
    group = Group(ref.model, [s.model for s in srcs], [s.params for s in srcs], sl.params,
                  has_base=base_src is not None)
    ref_layers = layers(ref.model)
    for o in range(n):
        t = o / (n - 1) if n > 1 else 1.0  # mergekit's gradient position within the slice
        ref_layer = ranges[0][0] + o
        group.layers.append((ref.model, ref_layer))
        inputs = list(zip(srcs, ranges[1:] if base_src else ranges, strict=True))
        for suffix in ref_layers.suffixes[ref_layer]:
            names = []
            for s, (lo, _) in inputs:
                ml = layers(s.model)
                if suffix not in ml.suffixes[lo + o]:
                    raise ValueError(
                        f"{s.where}: {s.model} has no tensor {ml.name(lo + o, suffix)!r} (its layer "
                        f"{lo + o} does not match layer {ref_layer} of {ref.model})"
                    )
                names.append(ml.name(lo + o, suffix))
            group.entries.append(
                Entry(ref_layers.name(first_layer + o, suffix), ref_layers.name(ref_layer, suffix), names, t)
            )
    return group, n


def _edge_group(
    base_src: SliceSource | None,
    srcs: list[SliceSource],
    sl: OutputSlice,
    layers: Callable[[Path], ModelLayers],
    which: str,
) -> Group:
    """The pre-layer (``which="pre"``) or post-layer weights, merged at t = 0."""
    ref = base_src or srcs[0]
    group = Group(ref.model, [s.model for s in srcs], [s.params for s in srcs], sl.params, edge=True,
                  has_base=base_src is not None)
    for name in getattr(layers(ref.model), which):
        group.entries.append(Entry(name, name, [name] * len(srcs), 0.0))
    return group


def plan_groups(
    slices: Sequence[OutputSlice],
    base: Path | None,
    layers: Callable[[Path], ModelLayers],
    *,
    separate_base: bool,
    n_sources: int | None,
) -> tuple[list[Group], int]:
    """The groups of a merge (pre weights, each slice, post weights) and the number of output layers.

    ``separate_base``: the method reads the base apart from its sources (task vectors, nearswap); the base then
    comes from the slice's sources (a `models:` config has it whatever is listed).
    """
    groups: list[Group] = []
    total = 0
    split = []
    for sl in slices:
        base_src, srcs = _split_base(sl, sl.base or base, separate_base)
        if not srcs:
            raise ValueError(f"{sl.where}: no source models to merge (only the base is listed)")
        if n_sources is not None and len(srcs) != n_sources:
            raise ValueError(
                f"{sl.where}: the method takes exactly {n_sources} model(s) per slice besides the base, "
                f"got {len(srcs)}"
            )
        group, n = _slice_group(sl, base_src, srcs, total, layers)
        groups.append(group)
        split.append((base_src, srcs))
        total += n
    pre = _edge_group(*split[0], slices[0], layers, "pre")
    # mergekit zips the last slice's listed models with the first slice's: as many as the first slice lists
    last = slices[-1]
    trimmed = dataclasses.replace(last, sources=last.sources[: len(slices[0].sources)])
    post = _edge_group(*_split_base(trimmed, last.base or base, separate_base), last, layers, "post")
    return _coalesce([pre, *groups, post]), total


def resolve_plans(
    group: Group, method: MergeMethod, top: Mapping[str, Any], seed: int, where: str
) -> dict[str, MergePlan]:
    """One :class:`MergePlan` per output tensor of ``group``, with mergekit's precedence: the model's own
    ``parameters``, then the slice's, then the top level (filters match the model's input tensor name for
    per-model parameters and the output name for the others, as mergekit's resolver does)."""
    shared_names = sorted({*top, *group.slice_params})
    per_names = [n for n in method.per_source if n != "weight"] + ["weight"]
    cache: dict[Any, MergePlan] = {}
    plans = {}
    for e in group.entries:
        shared = resolve_all(shared_names, (group.slice_params, top), e.out, e.t)
        per = [
            resolve_all(per_names, (p, group.slice_params, top), name, e.t)
            for p, name in zip(group.source_params, e.sources_in, strict=True)
        ]
        key = (tuple(sorted(shared.items())), tuple(tuple(sorted(p.items())) for p in per))
        if key not in cache:
            try:
                plan = MergePlan.build(method, len(per), None, shared, per, seed)
                plan.has_base = group.has_base
                check_della_range(plan.tensor_params())
            except ValueError as exc:
                raise ValueError(f"{where}: tensor {e.out!r}: {exc}") from None
            cache[key] = plan
        plans[e.out] = cache[key]
    return plans


def per_tensor_method(method: MergeMethod, plans: Mapping[str, MergePlan]) -> MergeMethod:
    """``method`` with each tensor's weights and parameters taken from ``plans`` (by the tensor's name)."""
    fn = method.fn

    def per_tensor(
        base: torch.Tensor, stack: torch.Tensor, weights: torch.Tensor, params: Mapping[str, Any], ctx
    ):
        plan = plans[ctx.name]
        # the tensor's own weights as given (the spherical methods round these, not their float32 copies, to
        # the dtype), not the first plan's that the merger put there; set in place: a method writes to ctx
        ctx.weight_values = plan.weight_values if plan.weight_values is not None else tuple(plan.weights.tolist())
        return fn(base, stack, plan.weights, plan.tensor_params(), ctx)

    return dataclasses.replace(method, fn=per_tensor)
