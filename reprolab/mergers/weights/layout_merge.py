"""Run a merge whose output is not "the base's tensors, merged": slices, per-tensor parameters, a new tokenizer.

The groups of :mod:`layout` (pre weights, each slice, post weights) are merged one after another by
:func:`engine.merge_iter` over renamed views of the checkpoints, each tensor with its own resolved parameters,
and streamed into one :class:`io.StreamingWriter` through the merge's :class:`output.OutputFolder` (same safety
rules as every merge: inputs apart from OUT, temporaries renamed when complete, a manifest). Vocabulary tensors
are realigned to the output tokenizer (:mod:`tokenizer`) as they are read. OUT's ``config.json`` states the
layer count, the vocabulary size and the dtype written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from reprolab.mergers.weights.engine import (
    _FLOATS,
    _MODEL_CONFIG,
    _check_dtypes,
    _validate,
    _written_dtype,
    copy_model_files,
    merge_iter,
    to_written,
)
from reprolab.mergers.weights.io import Checkpoint, StreamingWriter
from reprolab.mergers.weights.layout import (
    Group,
    ModelLayers,
    OutputSlice,
    SliceSource,
    model_config,
    model_layers,
    per_tensor_method,
    plan_groups,
    renamed,
    resolve_plans,
)
from reprolab.mergers.weights.output import OutputFolder, check_separate
from reprolab.mergers.weights.tokenizer import (
    TOKENIZER_FILES,
    Vocabulary,
    align_rows,
    build_vocabulary,
    chat_template_text,
    load_tokenizer,
    save_tokenizer,
)

if TYPE_CHECKING:
    from reprolab.mergers.weights.config import MergeConfig

_VOCAB = re.compile(r"(embed_tokens|wte|lm_head|word_embeddings|embed_in|embed_out)")


@dataclasses.dataclass(frozen=True)
class _Info:
    dtype: torch.dtype
    shape: tuple[int, ...]


class _GroupAligner:
    """The realigned vocabulary tensors of one group, computed for all its models at once, one tensor at a time."""

    def __init__(
        self, voc: Vocabulary, views: dict[Path, Checkpoint], names: set[str], work: torch.dtype | None
    ):
        self.voc, self.views, self.names, self.work = voc, views, names, work
        self._name: str | None = None
        self._rows: dict[Path, torch.Tensor] = {}

    def _dtype(self, name: str) -> torch.dtype:
        if self.work is not None:
            return self.work
        dtype = next(iter(self.views.values())).info(name).dtype
        for v in self.views.values():
            dtype = torch.promote_types(dtype, v.info(name).dtype)
        return dtype

    def info(self, name: str) -> _Info:
        shape = next(iter(self.views.values())).info(name).shape
        return _Info(self._dtype(name), (self.voc.size, *shape[1:]))

    def get(self, model: Path, name: str) -> torch.Tensor:
        if self._name != name:
            self._rows = {}
            dt = self._dtype(name)
            self._rows = align_rows(self.voc, {m: v.get(name).to(dt) for m, v in self.views.items()}, name)
            self._name = name
        return self._rows[model]


class _AlignedView:
    """One model of a group, its vocabulary tensors realigned (the others read through)."""

    def __init__(self, view: Checkpoint, model: Path, aligner: _GroupAligner) -> None:
        self.view, self.model, self.aligner, self.path = view, model, aligner, view.path

    def keys(self) -> list[str]:
        return self.view.keys()

    def has(self, name: str) -> bool:
        return self.view.has(name)

    def info(self, name: str) -> Any:
        return self.aligner.info(name) if name in self.aligner.names else self.view.info(name)

    def get(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        if name not in self.aligner.names:
            return self.view.get(name, out)
        t = self.aligner.get(self.model, name)
        return t if out is None else out.copy_(t)


def _slices(cfg: MergeConfig) -> list[OutputSlice]:
    if cfg.slices is not None:
        return cfg.slices
    where = str(cfg.config_path)
    sources = tuple(
        SliceSource(p, None, s, f"{where}: models[{i}] ({p})")
        for i, (p, s) in enumerate(
            zip(cfg.sources, cfg.model_settings or [{}] * len(cfg.sources), strict=True)
        )
    )
    return [OutputSlice(sources, None, {}, where)]


def _vocab_names(group: Group, views: dict[Path, Checkpoint], layers: ModelLayers) -> set[str]:
    names = {e.out for e in group.entries if e.out in (*layers.pre, *layers.post) and _VOCAB.search(e.out)}
    return {n for n in names if len(views[group.base].info(n).shape) >= 1}


# config.json entries with one value per layer (transformers checks their length against the layer count)
_PER_LAYER_KEYS = ("layer_types",)


def _per_layer_config(layer_map: list[tuple[Path, int]], donor: Path) -> dict[str, Any]:
    """Per-layer config entries for the output layers: each output layer takes the entry of the layer it copies
    (mergekit 0.1.5 leaves them as they are, and transformers 5 then refuses to save a Qwen2 frankenmerge)."""
    out: dict[str, Any] = {}
    donor_cfg = model_config(donor)
    for key in _PER_LAYER_KEYS:
        if not isinstance(donor_cfg.get(key), list):
            continue
        values = []
        for model, layer in layer_map:
            src = model_config(model).get(key)
            if not isinstance(src, list) or layer >= len(src):
                raise ValueError(f"{model}/config.json: {key} has no entry for layer {layer}")
            values.append(src[layer])
        out[key] = values
    return out


def merge_layout(
    cfg: MergeConfig,
    out_dir: Path,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Path]:
    """Merge ``cfg`` (slices, per-tensor parameters and/or tokenizer settings) into ``out_dir``.

    Errors are one line naming the config file (and the slice, model, tensor or token).
    """
    try:
        return _merge_layout(cfg, out_dir, overwrite=overwrite, progress=progress)
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(
            msg if msg.startswith(str(cfg.config_path)) else f"{cfg.config_path}: {msg}"
        ) from None


def _merge_layout(
    cfg: MergeConfig, out_dir: Path, *, overwrite: bool, progress: Callable[[int, int, str], None] | None
) -> list[Path]:
    method = cfg.plan.method
    slices = _slices(cfg)
    models = list(
        dict.fromkeys(
            [
                *([cfg.base] if cfg.base else []),
                *(s.model for sl in slices for s in sl.sources),
                *(sl.base for sl in slices if sl.base),
            ]
        )
    )
    check_separate(Path(out_dir), [(f"model {i}", m) for i, m in enumerate(models)])
    ckpts = {m: Checkpoint(m, allow_pickle=cfg.allow_pickle) for m in models}
    layer_cache: dict[Path, ModelLayers] = {}

    def layers(m: Path) -> ModelLayers:
        if m not in layer_cache:
            layer_cache[m] = model_layers(ckpts[m])
        return layer_cache[m]

    separate = method.separates_base
    groups, n_layers = plan_groups(
        slices, cfg.base if separate and cfg.base_named else None, layers, separate_base=separate, n_sources=method.n_sources
    )
    spec = cfg.tokenizer
    voc = build_vocabulary(spec, cfg.base, models) if spec is not None and spec.aligns else None
    passes = []
    shapes: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
    for g in groups:
        names = [e.out for e in g.entries]
        base_view = renamed(ckpts[g.base], {e.out: e.base_in for e in g.entries})
        views = [
            renamed(ckpts[m], {e.out: e.sources_in[i] for e in g.entries}) for i, m in enumerate(g.sources)
        ]
        vocab = _vocab_names(g, {g.base: base_view}, layers(g.base)) if voc is not None else set()
        if vocab:
            aligner = _GroupAligner(
                voc, {g.base: base_view, **dict(zip(g.sources, views, strict=True))}, vocab, cfg.compute_dtype
            )
            base_view = _AlignedView(base_view, g.base, aligner)
            views = [_AlignedView(v, m, aligner) for v, m in zip(views, g.sources, strict=True)]
        _validate(base_view, views)
        _check_dtypes(base_view, views, names, cfg.compute_dtype)
        plans = resolve_plans(g, method, cfg.top_settings, cfg.plan.seed, str(cfg.config_path))
        first = plans[names[0]]
        plan = dataclasses.replace(first, method=per_tensor_method(method, plans))
        for n in names:
            dt = base_view.info(n).dtype
            shapes[n] = ((cfg.out_dtype or dt) if dt in _FLOATS else dt, tuple(base_view.info(n).shape))
        passes.append((base_view, views, plan, g.edge))
    donor = cfg.base
    updates: dict[str, Any] = {}
    key = layers(donor).config_key
    if cfg.slices is not None and key is not None:
        updates[key] = n_layers
        updates.update(_per_layer_config([lay for g in groups for lay in g.layers], donor))
    if voc is not None:
        updates["vocab_size"] = voc.size
    tok_files: dict[str, bytes] = {}
    if spec is not None:
        template = chat_template_text(spec, models) if spec.chat_template else None
        tokenizer = voc.tokenizer if voc is not None else load_tokenizer(donor)
        tok_files = save_tokenizer(tokenizer, template)
    output = OutputFolder(out_dir, overwrite=overwrite)
    try:
        writer = StreamingWriter(
            output.path,
            shapes,
            max_shard_bytes=cfg.max_shard_bytes,
            metadata={"merged_by": "reprolab"},
            output=output,
        )
        done = 0
        with writer:
            for base_view, views, plan, edge in passes:
                # embeddings or a head alone (e.g. frozen during fine-tuning) do not make a source the base
                for name, t in merge_iter(
                    base_view,
                    views,
                    plan,
                    compute_dtype=cfg.compute_dtype,
                    allow_source_as_base=cfg.allow_source_as_base or edge,
                    native_arithmetic=cfg.native_arithmetic,
                ):
                    writer.write(name, to_written(name, t, shapes[name][0], cfg.compute_dtype))
                    done += 1
                    if progress is not None:
                        progress(done, len(shapes), name)
        skip = TOKENIZER_FILES if tok_files else frozenset()
        copied = copy_model_files(donor, output, _written_dtype(shapes), config_updates=updates, skip=skip)
        for fname, data in tok_files.items():
            output.temp(fname).write_bytes(data)
        output.commit(order=[*writer.names, *(n for n in copied if n == _MODEL_CONFIG)])
    except BaseException:
        output.abort()
        raise
    return writer.files


__all__ = ["merge_layout", "model_config"]
