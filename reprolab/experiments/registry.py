"""The experiment registry: names to pure functions ``fn(config, seed) -> dict[str, float]``.

Contract for every experiment:
- deterministic given ``(config, seed)``: seed every RNG it uses from ``seed`` (numpy Generator, torch, JAX keys);
- returns a flat dict of finite floats (metric name -> value); extra metrics are welcome, the claim picks one;
- raises ``ValueError`` with a clear message on a bad config key (use :func:`config_value`).

``version`` is part of the cache key: bump it when the experiment's meaning changes without its module's
source changing (for example when a fixture it reads is rebuilt).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reprolab.claims.resolve import ExperimentSpec

ExperimentFn = Callable[[Mapping[str, Any], int], dict[str, float]]
MetricRange = tuple[float | None, float | None]
"""Attainable ``(low, high)`` of a metric; ``None`` is an unbounded side."""

_REGISTRY: dict[str, Experiment] = {}
_RESULTS: dict[tuple[str, str, int], dict[str, float]] = {}


class UnknownExperimentError(LookupError):
    """A claim names an experiment that no module registers."""


@dataclass(frozen=True)
class Experiment:
    name: str
    fn: ExperimentFn
    version: str
    metrics: tuple[str, ...]
    module: str
    metric_ranges: Mapping[str, MetricRange] | None = None
    config_keys: tuple[str, ...] | None = None

    def __call__(self, config: Mapping[str, Any], seed: int) -> dict[str, float]:
        """Run the experiment, at most once per (config, seed) in a process.

        Experiments are deterministic in (config, seed), so a repeat, by the engine or by another experiment
        that summarises existing runs, is served from memory. Failures are not remembered.
        """
        key = (self.name, json.dumps(config, sort_keys=True, default=str), seed)
        if key not in _RESULTS:
            _RESULTS[key] = dict(require_metrics_mapping(self.name, self.fn(config, seed)))
        return dict(_RESULTS[key])


def require_metrics_mapping(name: str, result: object) -> Mapping[str, Any]:
    """``result`` if it is a mapping; else TypeError naming the experiment (``dict()`` would have read a list of
    pairs as metrics, and failed on anything else with a message that names neither)."""
    if not isinstance(result, Mapping):
        raise TypeError(f"experiment {name!r} returned {type(result).__name__}, expected a dict of floats")
    return result


def experiment(
    name: str,
    *,
    version: str = "1",
    metrics: tuple[str, ...] | Mapping[str, MetricRange] = (),
    config_keys: tuple[str, ...] | None = None,
) -> Callable[[ExperimentFn], ExperimentFn]:
    """Register ``fn`` under ``name`` (``"<module>.<what>"``, module under ``reprolab.experiments``).

    ``metrics`` lists the metric names the experiment promises to return, so that a claim naming an unknown
    metric is caught when the claim file is loaded rather than after a long run. As a mapping it also gives each
    metric's attainable ``(low, high)`` range (``None`` for an unbounded side), which lets a static audit prove
    that a claim's bound can both pass and fail. ``config_keys`` lists every config key the experiment reads, so
    that an unknown (misspelt) key is refused instead of silently ignored.
    """
    module_name = name.split(".", 1)[0]
    if "." not in name or not module_name.isidentifier():
        raise ValueError(f"experiment name {name!r} must look like '<module>.<name>'")

    def register(fn: ExperimentFn) -> ExperimentFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(
                f"experiment {name!r} is registered twice ({_REGISTRY[name].module} and {fn.__module__})"
            )
        ranges = dict(metrics) if isinstance(metrics, Mapping) else None
        keys = tuple(config_keys) if config_keys is not None else None
        _REGISTRY[name] = Experiment(name, fn, version, tuple(metrics), fn.__module__, ranges, keys)
        return fn

    return register


def get_experiment(name: str) -> Experiment:
    """Look ``name`` up, importing its module on first use.

    ``name`` is a registered name (``clustering.overcluster_then_merge``: module
    ``reprolab.experiments.clustering``) or a reference ``package.module:function`` to any importable module.
    """
    if ":" in name:
        return _from_reference(name)
    if name not in _REGISTRY:
        module_name = name.split(".", 1)[0]
        if not module_name.isidentifier():
            raise UnknownExperimentError(f"unknown experiment {name!r}")
        try:
            importlib.import_module(f"reprolab.experiments.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"reprolab.experiments.{module_name}":
                raise UnknownExperimentError(
                    f"unknown experiment {name!r}: no module reprolab.experiments.{module_name}"
                ) from None
            raise
    try:
        return _REGISTRY[name]
    except KeyError:
        known = sorted(n for n in _REGISTRY if n.startswith(name.split(".", 1)[0] + "."))
        raise UnknownExperimentError(f"unknown experiment {name!r}; known in that module: {known}") from None


def load_experiment(spec: ExperimentSpec) -> Experiment:
    """Import the experiment a statically resolved :class:`ExperimentSpec` describes (in the process that runs it)."""
    if spec.function is not None:
        return _from_reference(f"{spec.module}:{spec.function}")
    importlib.import_module(spec.module)
    try:
        return _REGISTRY[spec.name]
    except KeyError:
        raise UnknownExperimentError(
            f"module {spec.module} did not register experiment {spec.name!r} when imported"
        ) from None


def _from_reference(reference: str) -> Experiment:
    module_name, _, attribute = reference.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise UnknownExperimentError(
            f"unknown experiment {reference!r}: {module_name} has no function {attribute!r}"
        )
    for registered in _REGISTRY.values():
        if registered.fn is fn:
            return registered
    # A plain function: an experiment by contract, without declared metrics or keys.
    return Experiment(reference, fn, "1", (), module_name)


def config_value(
    config: Mapping[str, Any], key: str, default: Any = ..., *, kind: type | tuple[type, ...] | None = None
) -> Any:
    """Read ``config[key]`` with a clear error naming the key when it is missing or of the wrong type."""
    if key not in config:
        if default is ...:
            raise ValueError(f"config is missing required key {key!r} (has: {sorted(config)})")
        return default
    value = config[key]
    if kind is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ValueError(f"config key {key!r} must be {names}, got {type(value).__name__} {value!r}")
    return value
