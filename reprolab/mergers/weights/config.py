"""The YAML merge configuration: mergekit's own format plus reprolab's extra methods and options.

A mergekit config for ``linear``, ``task_arithmetic``, ``ties``, ``dare_ties``, ``dare_linear``,
``breadcrumbs(_ties)``, ``della(_linear)``, ``passthrough`` or ``nearswap`` runs with mergekit's arithmetic::

    models:
      - model: ./ft-a
        parameters: {weight: 1.0, density: 0.2}
      - model: ./base            # listing the base is allowed; it is not merged as a source
    merge_method: ties
    base_model: ./base
    parameters: {normalize: true, int8_mask: true}
    dtype: float32

Extras: any registered method (``fisher`` with a per-model ``fisher:`` path, ``neuromerging``,
``directional_consensus``, ...), method parameters such as ``trim_scope: model`` or ``rescale: paper``, and
top-level ``seed``, ``max_shard_size`` (bytes or "2GB"), ``compute_dtype: float32``, ``allow_source_as_base``.
mergekit's layouts and schedules are honoured: ``slices`` with ``layer_range`` (:mod:`layout`), parameter
gradients and ``filter`` lists (:mod:`schedule`), ``tokenizer_source`` / ``tokenizer`` / ``chat_template``
(:mod:`tokenizer`). Not supported (clear error naming the key): ``modules`` layouts, a slice's
``residual_weight``. Every field is typed and checked (``params.py``); multi-document configs are run by
:mod:`multi`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reprolab.mergers.weights.engine import MergePlan
from reprolab.mergers.weights.io import dtype_from_name
from reprolab.mergers.weights.layout import OutputSlice, SliceSource
from reprolab.mergers.weights.native import check_della_range
from reprolab.mergers.weights.registry import MergeMethod, get_method
from reprolab.mergers.weights.schedule import a_value, any_varies, parse_setting, varies
from reprolab.mergers.weights.tokenizer import TokenizerSpec, parse_tokenizer
from reprolab.yamlsafe import YamlProblem, load_all

_TOP = {"models", "merge_method", "base_model", "dtype", "out_dtype", "parameters", "tokenizer_source", "tokenizer",
        "chat_template", "seed", "max_shard_size", "allow_source_as_base", "allow_pickle", "slices", "modules",
        "compute_dtype"}
_MODEL_KEYS = {"model", "parameters", "fisher"}
_SLICE_KEYS = {"sources", "base_model", "parameters", "residual_weight"}
_SLICE_SOURCE_KEYS = {"model", "layer_range", "parameters"}
# mergekit parameters that only steer its own execution and do not change the result.
_MERGEKIT_NOOP = {"int8_mask"}
# parameters that decide a pass over the whole model before any tensor is merged (trim_scope: model finds one
# threshold over all tensors), so they take one value per config: no gradient, no filter list
_ONE_VALUE = {"trim_scope"}
@dataclass
class MergeConfig:
    method: str
    base: Path | None  # the config's base_model, else the first source (the origin of weight methods)
    sources: list[Path]
    plan: MergePlan
    compute_dtype: torch.dtype | None = None
    out_dtype: torch.dtype | None = None
    fisher: list[Path] | None = None
    max_shard_bytes: int = 5 * 1024**3
    allow_source_as_base: bool = False
    allow_pickle: bool = False
    native_arithmetic: bool = True  # mergekit's arithmetic in the 16-bit dtype; `compute_dtype: float32` turns it off
    config_path: Path = Path("merge.yaml")
    top_settings: dict[str, Any] = field(default_factory=dict)  # top-level `parameters` (schedule.py settings)
    model_settings: list[dict[str, Any]] = field(default_factory=list)  # per source, `models:` configs
    slices: list[OutputSlice] | None = None  # a `slices:` config
    tokenizer: TokenizerSpec | None = None
    base_named: bool = True  # False: no top-level base_model (``base`` is then the first source)

    @property
    def needs_layout(self) -> bool:
        """Slices, per-tensor parameters or a tokenizer: merged by :func:`layout_merge.merge_layout`."""
        return (self.slices is not None or self.tokenizer is not None
                or any_varies([self.top_settings, *self.model_settings]))


def _where(path: Path, what: str) -> str:
    return f"{path}: {what}"


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping of name: value, got a {type(value).__name__} ({value!r})")
    return value


def _bool(raw: dict[str, Any], key: str, config_path: Path) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(_where(config_path, f"{key} must be a YAML boolean (true/false, unquoted), got {value!r}"))
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _params(method: MergeMethod, given: dict[str, Any], where: str, *, per_model: bool) -> dict[str, Any]:
    """Type- and range-check a `parameters` mapping (``where``: the config, and the model for per-model ones).

    Values may be gradients or filter lists (:mod:`schedule`), each entry checked; unknown top-level names are
    left to MergePlan.build, which lists the known ones.
    """
    out = {}
    for key, value in given.items():
        field_name = f"parameters.{key}"
        known = key in method.defaults or key in method.per_source or key in _MERGEKIT_NOOP
        if per_model and key not in method.per_source:
            if known:  # normalize, lambda, int8_mask...: mergekit reads them only at the top level or per slice
                raise ValueError(f"{where}: {field_name} is one setting for the whole merge, not a per-model "
                                 f"parameter of {method.name!r}: give it in the top-level `parameters` "
                                 f"(per-model: {list(method.per_source)})")
            raise ValueError(f"{where}: unknown per-model parameter {key!r} for {method.name!r}; "
                             f"known: {list(method.per_source)}")
        if not known:
            out[key] = value
            continue
        value = parse_setting(field_name, value, method.defaults.get(key, False if key in _MERGEKIT_NOOP else 1.0),
                              where, method.rules.get(key))
        if key in _ONE_VALUE and varies(value):
            raise ValueError(f"{where}: {field_name} must be one value for the whole config, not a gradient or "
                             f"filter list (it decides a pass over the whole model), got {given[key]!r}")
        if key in _MERGEKIT_NOOP and key not in method.defaults:
            continue
        out[key] = value
    return out


def _scalars(settings: dict[str, Any], method: MergeMethod) -> dict[str, Any]:
    """The settings that are one value everywhere (the per-tensor ones are resolved by :mod:`layout`, which checks
    per tensor that a required one is set); a required parameter (slerp's ``t``) given per tensor stands in with
    one of its values, so that the checks made once per config do not find it missing."""
    out = {k: v for k, v in settings.items() if not varies(v)}
    out.update({k: a_value(v) for k, v in settings.items() if varies(v) and k in method.defaults
                and method.defaults[k] is None})
    return out


def _needs_base(method: MergeMethod) -> bool:
    """The method cannot run without a base (task vectors, or a weight method that reads it)."""
    return method.uses_task_vectors or method.needs_base


def _check_source_count(method: MergeMethod, n: int, where: str) -> None:
    if n < method.min_sources:
        raise ValueError(f"{where}: method {method.name!r} takes at least {method.min_sources} model(s) "
                         f"besides the base, got {n}")
    if method.n_sources is not None and n != method.n_sources:
        raise ValueError(f"{where}: method {method.name!r} takes exactly {method.n_sources} model(s) "
                         f"besides the base, got {n}")


def _slice_plan(method: MergeMethod, sl: OutputSlice, base: Path | None, top: dict[str, Any], seed: int) -> MergePlan:
    srcs = [s for s in sl.sources if not (method.separates_base and s.model == (sl.base or base))]
    if not srcs:
        raise ValueError(f"{sl.where}: no source models to merge (only the base is listed)")
    if method.base_is_source and (sl.base or base) is not None:
        raise ValueError(f"{sl.where}: method {method.name!r} merges a base_model as one more input; in `slices` "
                         "list it among the slice's sources instead")
    _check_source_count(method, len(srcs), sl.where)
    try:
        plan = MergePlan.build(method, len(srcs), None, {**_scalars(top, method), **_scalars(sl.params, method)},
                               [_scalars(s.params, method) for s in srcs], seed)
        plan.has_base = (sl.base or base) is not None
        check_della_range(plan.tensor_params())
    except ValueError as exc:
        raise ValueError(f"{sl.where.split(': ', 1)[-1]}: {exc}") from None
    return plan


def _model_entry(entry: dict[str, Any], where: str, keys: set[str], method: MergeMethod, cdir: Path,
                 aliases: Mapping[str, Path] | None) -> tuple[str, Path, dict[str, Any]]:
    """(where, resolved path, checked parameter settings) of a `models:` entry or a slice source."""
    where = f"{where} ({entry['model']})"
    bad = sorted(map(str, set(entry) - keys))
    if bad:
        raise ValueError(f"{where}: unknown key(s) {bad}")
    path = _resolve_path(entry["model"], cdir, where, aliases)
    params = _params(method, _mapping(entry.get("parameters"), f"{where}: parameters"), where, per_model=True)
    return where, path, params


def _layer_range(value: Any, where: str) -> tuple[int, int]:
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value) and 0 <= value[0] < value[1])
    if not ok:
        raise ValueError(f"{where}: layer_range must be [start, end] with integers 0 <= start < end, got {value!r}")
    return value[0], value[1]


def _parse_slices(raw: Any, method: MergeMethod, cdir: Path, config_path: Path,
                  aliases: Mapping[str, Path] | None) -> list[OutputSlice]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(_where(config_path, "`slices` must be a non-empty list of {sources: [...]}"))
    out = []
    for i, sl in enumerate(raw):
        where = f"{config_path}: slices[{i}]"
        if not isinstance(sl, dict) or "sources" not in sl:
            raise ValueError(f"{where}: each slice needs `sources:` (a list of {{model, layer_range}})")
        bad = sorted(map(str, set(sl) - _SLICE_KEYS))
        if bad:
            raise ValueError(f"{where}: unknown key(s) {bad}")
        if sl.get("residual_weight") is not None:
            raise ValueError(f"{where}: residual_weight is not implemented (mergekit 0.1.5 reads it and ignores it); "
                             "remove it")
        sources = sl["sources"]
        if not isinstance(sources, list) or not sources:
            raise ValueError(f"{where}: sources must be a non-empty list")
        srcs = []
        for j, src in enumerate(sources):
            if not isinstance(src, dict) or "model" not in src or "layer_range" not in src:
                raise ValueError(f"{where}.sources[{j}]: each source needs `model:` and `layer_range: [start, end]`")
            swhere, path, params = _model_entry(src, f"{where}.sources[{j}]", _SLICE_SOURCE_KEYS, method, cdir, aliases)
            srcs.append(SliceSource(path, _layer_range(src["layer_range"], swhere), params, swhere))
        sbase = (_resolve_path(sl["base_model"], cdir, f"{where}: base_model", aliases)
                 if sl.get("base_model") is not None else None)
        params = _params(method, _mapping(sl.get("parameters"), f"{where}: parameters"), where, per_model=False)
        out.append(OutputSlice(tuple(srcs), sbase, params, where))
    return out


def load_documents(config_path: Path) -> list[Any]:
    """The YAML documents of a config file (several for a mergekit-multi config); errors name the file."""
    try:
        if config_path.exists() and not config_path.is_file():  # /dev/zero would be read forever, a FIFO wait
            raise ValueError(f"merge config {config_path} is not a regular file (a folder, FIFO or device)")
        data = config_path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"merge config {config_path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"merge config {config_path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{config_path}: not a UTF-8 text file (a YAML merge config was expected)") from None
    try:
        return load_all(text)
    except YamlProblem as exc:
        where = f"{config_path}:{exc.line}" if exc.line is not None else f"{config_path}"
        raise ValueError(f"{where}: invalid YAML ({f'{exc.key}: ' if exc.key else ''}{exc.message})") from None


def _size(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", value, re.IGNORECASE) if isinstance(value, str) else None
    size = float(m.group(1)) * 1024 ** "_KMGT".index(m.group(2).upper() or "_") if m else 0.0
    size = int(size) if math.isfinite(size) else 0  # digits past float range: no size
    if size <= 0:
        raise ValueError(f"{where}: max_shard_size must be a positive number of bytes or like '2GB', got {value!r}")
    return size


def _resolve_path(ref: Any, config_dir: Path, where: str, aliases: Mapping[str, Path] | None = None) -> Path:
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"{where}: model must be a path string, got {ref!r}")
    if aliases and ref in aliases:  # an earlier merge of a multi-document config, by its `name`
        return aliases[ref]
    if "+" in ref and not Path(ref).exists():
        raise ValueError(f"{where}: LoRA references ({ref!r}) are not supported")
    p = Path(ref).expanduser()
    if not p.is_absolute() and not p.exists() and (config_dir / p).exists():
        p = config_dir / p
    if not p.exists():
        raise ValueError(f"{where}: model path {ref!r} does not exist (only local paths are supported, no hub ids)")
    return p.resolve()


def parse_config(config_path: Path, document: Any = None, aliases: Mapping[str, Path] | None = None) -> MergeConfig:
    """Read and validate a merge config; every error is one line naming the file, the model and the field.

    ``document``: one already-loaded document of the file (multi-document configs; see :mod:`multi`), whose
    model references may name earlier merges (``aliases``: name -> output folder).
    """
    config_path = Path(config_path)
    if document is None:
        docs = load_documents(config_path)
        if len(docs) > 1:
            raise ValueError(f"{config_path}: holds {len(docs)} YAML documents (a mergekit-multi config); "
                             "run it with `reprolab merge CONFIG OUT --intermediate-dir DIR`")
        document = docs[0] if docs else None
    raw = document
    if not isinstance(raw, dict):
        raise ValueError(f"{config_path}: the config must be a mapping")
    unknown = sorted(map(str, set(raw) - _TOP))
    if unknown:
        raise ValueError(_where(config_path, f"unknown top-level key(s) {unknown}"))
    modules = raw.get("modules")  # null or {}: no modules, as in mergekit (an empty mapping counts as absent)
    if modules is not None and not isinstance(modules, dict):
        raise ValueError(_where(config_path, f"`modules` must be a mapping (module name: definition), got {modules!r}"))
    if modules:
        raise ValueError(_where(config_path, "`modules` layouts are not supported; use `models` or `slices`"))
    if "merge_method" not in raw:
        raise ValueError(_where(config_path, "missing `merge_method`"))
    name = _string(raw["merge_method"], f"{config_path}: merge_method")
    try:
        method = get_method(name)
    except ValueError as exc:
        raise ValueError(f"{config_path}: merge_method: {exc}") from None
    cdir = config_path.parent
    base = (_resolve_path(raw["base_model"], cdir, f"{config_path}: base_model", aliases)
            if raw.get("base_model") is not None else None)
    if (raw.get("models") is None) == (raw.get("slices") is None):
        raise ValueError(_where(config_path, "give exactly one of `models` (whole models) and `slices` (layer ranges)"))
    slices = None
    if raw.get("slices") is not None:
        slices = _parse_slices(raw["slices"], method, cdir, config_path, aliases)
        sources = list(dict.fromkeys(s.model for sl in slices for s in sl.sources
                                     if not (method.separates_base and s.model == (sl.base or base))))
        per, fisher = [], []
        if not sources:
            raise ValueError(_where(config_path, "no source models to merge (only the base is listed)"))
    else:
        sources, per, fisher = _parse_models(raw["models"], method, base, cdir, config_path, aliases)
    if _needs_base(method) and base is None and not (slices and all(sl.base for sl in slices)):
        raise ValueError(_where(config_path, f"method {method.name!r} needs `base_model` (the pretrained model)"))
    if method.needs_fisher and not fisher:
        raise ValueError(_where(config_path, f"method {method.name!r} needs a `fisher:` path per model"))
    top = _params(method, _mapping(raw.get("parameters"), f"{config_path}: parameters"), str(config_path), per_model=False)
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(_where(config_path, f"seed must be an integer, got {seed!r}"))
    try:
        if slices is None:
            plan = MergePlan.build(method, len(sources), None, _scalars(top, method), [_scalars(p, method) for p in per],
                                   seed)
            plan.has_base = base is not None
            check_della_range(plan.tensor_params())
        else:  # each slice's one-value parameters, checked now (gradients and filters per tensor, before merging)
            plans = [_slice_plan(method, sl, base, top, seed) for sl in slices]
            plan = plans[0]
    except ValueError as exc:
        raise ValueError(f"{config_path}: {exc}") from None
    tokenizer = parse_tokenizer(raw, cdir, config_path, aliases)
    layout = slices is not None or tokenizer is not None or any_varies([top, *per])
    if layout and fisher:
        raise ValueError(_where(config_path, "per-model Fisher files cannot be combined with slices, parameter "
                                             "gradients/filters or tokenizer settings"))
    scopes = [sl.params for sl in slices] if slices else [{}]  # a slice's own trim_scope counts too
    if layout and any(method.global_trim({**method.defaults, **_scalars(top, method), **_scalars(sc, method)})
                      for sc in scopes):
        raise ValueError(_where(config_path, "trim_scope: model (one threshold over the whole model) cannot be "
                                             "combined with slices, parameter gradients/filters or tokenizer settings"))
    try:
        compute = dtype_from_name(_string(raw["dtype"], "dtype")) if raw.get("dtype") is not None else None
        out = dtype_from_name(_string(raw["out_dtype"], "out_dtype")) if raw.get("out_dtype") is not None else compute
    except ValueError as exc:
        raise ValueError(f"{config_path}: {exc}") from None
    native = True
    if raw.get("compute_dtype") is not None:
        try:
            arith = dtype_from_name(_string(raw["compute_dtype"], "compute_dtype"))
        except ValueError as exc:
            raise ValueError(f"{config_path}: compute_dtype: {exc}") from None
        if arith not in (torch.float32, compute):
            raise ValueError(_where(config_path, "compute_dtype must be float32 (the precise path) or the same as "
                                                 f"dtype (mergekit's arithmetic), got {raw['compute_dtype']!r}"))
        native = arith != torch.float32
    return MergeConfig(
        method=method.name,
        base=base if base is not None else (slices[0].sources[0].model if slices else sources[0]),
        sources=sources,
        plan=plan,
        compute_dtype=compute,
        out_dtype=out,
        fisher=fisher or None,
        max_shard_bytes=_size(raw.get("max_shard_size", 5 * 1024**3), f"{config_path}: max_shard_size"),
        allow_source_as_base=_bool(raw, "allow_source_as_base", config_path),
        allow_pickle=_bool(raw, "allow_pickle", config_path),
        native_arithmetic=native,
        config_path=config_path,
        top_settings=top,
        model_settings=per,
        slices=slices,
        tokenizer=tokenizer,
        base_named=base is not None,
    )


def _parse_models(models: Any, method: MergeMethod, base: Path | None, cdir: Path, config_path: Path,
                  aliases: Mapping[str, Path] | None) -> tuple[list[Path], list[dict[str, Any]], list[Path]]:
    """The sources of a `models:` config (a listed base is skipped), their parameter settings, Fisher paths."""
    if not isinstance(models, list) or not models:
        raise ValueError(_where(config_path, "`models` must be a non-empty list"))
    sources: list[Path] = []
    per: list[dict[str, Any]] = []
    fisher: list[Path] = []
    for i, entry in enumerate(models):
        where = f"{config_path}: models[{i}]"
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise ValueError(f"{where}: each model needs a `model:` path")
        where, path, params = _model_entry(entry, where, _MODEL_KEYS, method, cdir, aliases)
        if entry.get("fisher") is not None and not method.needs_fisher:
            raise ValueError(f"{where}: fisher: method {method.name!r} does not read Fisher files (only `fisher` "
                             "does); remove it")
        if method.separates_base and base is not None and path == base:
            continue  # mergekit lets the base appear in `models`; it is the base, not a source
        sources.append(path)
        per.append(params)
        if "fisher" in entry:
            fisher.append(_resolve_path(entry["fisher"], cdir, f"{where}.fisher"))
    if method.base_is_source and base is not None and base not in sources:
        sources.append(base)  # as mergekit does: the base is one more input, after the listed models
        per.append({})
    if not sources:
        raise ValueError(_where(config_path, "no source models to merge (only the base is listed)"))
    if _needs_base(method) and base is None:
        raise ValueError(_where(config_path, f"method {method.name!r} needs `base_model` (the pretrained model)"))
    _check_source_count(method, len(sources), str(config_path))
    if fisher and len(fisher) != len(sources):
        raise ValueError(_where(config_path, "give a `fisher:` path for every source or for none"))
    return sources, per, fisher
