"""Find a claim's experiment statically: from its name to module, function, version, metrics and config keys.

Nothing here imports an experiment module (no torch, no JAX at collection or when building cache keys):
modules are located by asking the finders on ``sys.meta_path`` (no import) and their ``@experiment(...)`` decorators read
with :mod:`ast`. Where a name is looked for, in order:

1. ``package.module:function``: that function of any importable module (a lab's own package);
2. ``<line>.<name>``: registered by ``reprolab.experiments.<line>`` (reprolab's own research lines);
3. a name registered by a module listed in ``[tool.reprolab] experiments``;
4. a name registered by a module named by an entry point of group ``reprolab.experiments``.
"""

from __future__ import annotations

import ast
import importlib.machinery
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from reprolab.experiments.registry import MetricRange, UnknownExperimentError

ENTRY_POINT_GROUP = "reprolab.experiments"


@dataclass(frozen=True)
class ExperimentSpec:
    """What the engine knows about an experiment without importing it."""

    name: str  # as claims write it: a registered name or ``module:function``
    module: str
    function: str | None  # the attribute to call; None: look the registered name up after import
    version: str
    metrics: tuple[str, ...]
    metric_ranges: dict[str, MetricRange] | None
    config_keys: tuple[str, ...] | None  # None: the experiment declares none, so keys are not checked
    origin: Path


@dataclass(frozen=True)
class _Declared:
    function: str
    name: str | None
    version: str
    metrics: tuple[str, ...]
    ranges: dict[str, MetricRange] | None
    config_keys: tuple[str, ...] | None


# --- locating modules without importing them ------------------------------------------------------------------


def _find_spec(name: str, path: list[str] | None) -> importlib.machinery.ModuleSpec | None:
    """Ask every finder on ``sys.meta_path`` (the path finder, and e.g. an editable install's), importing nothing."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        spec = find(name, path)
        if spec is not None:
            return spec
    return None


def _spec_of(name: str) -> importlib.machinery.ModuleSpec | None:
    parent, _, _ = name.rpartition(".")
    if not parent:
        return _find_spec(name, None)
    parent_spec = _spec_of(parent)
    locations = parent_spec.submodule_search_locations if parent_spec is not None else None
    if not locations:
        return None
    return _find_spec(name, list(locations))


def module_origin(name: str) -> Path | None:
    """The source file of module ``name`` (``__init__.py`` for a package), or None when there is none."""
    if not name or not all(part.isidentifier() for part in name.split(".")):
        return None
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None):
        return Path(loaded.__file__)  # type: ignore[arg-type]
    try:
        spec = _spec_of(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


# --- reading @experiment declarations ---------------------------------------------------------------------------


def _literal(node: ast.AST | None, default: Any) -> Any:
    if node is None:
        return default
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return default


def _decorator_call(decorator: ast.expr) -> ast.Call | None:
    if not isinstance(decorator, ast.Call):
        return None
    func = decorator.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return decorator if name == "experiment" else None


def declared_experiments(origin: Path) -> tuple[_Declared, ...]:
    """Every top-level function of ``origin``, with what its ``@experiment(...)`` declares (literals only)."""
    return _declared(origin, origin.stat().st_mtime_ns)


@cache
def _declared(origin: Path, mtime_ns: int) -> tuple[_Declared, ...]:
    del mtime_ns  # cache key only: an edited module is read again
    tree = ast.parse(origin.read_bytes(), filename=str(origin))
    found: list[_Declared] = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        call = next((c for c in map(_decorator_call, node.decorator_list) if c is not None), None)
        if call is None:
            found.append(_Declared(node.name, None, "1", (), None, None))
            continue
        keywords = {k.arg: k.value for k in call.keywords if k.arg}
        name = _literal(call.args[0], None) if call.args else _literal(keywords.get("name"), None)
        metrics = _literal(keywords.get("metrics"), ())
        ranges = dict(metrics) if isinstance(metrics, dict) else None
        keys = _literal(keywords.get("config_keys"), None)
        found.append(
            _Declared(
                node.name,
                name if isinstance(name, str) else None,
                str(_literal(keywords.get("version"), "1")),
                tuple(metrics) if isinstance(metrics, dict | tuple | list) else (),
                ranges,
                tuple(keys) if isinstance(keys, tuple | list) else None,
            )
        )
    return tuple(found)


def _spec(name: str, module: str, function: str | None, declared: _Declared, origin: Path) -> ExperimentSpec:
    return ExperimentSpec(
        name,
        module,
        function,
        declared.version,
        declared.metrics,
        declared.ranges,
        declared.config_keys,
        origin,
    )


def _registered_in(module: str) -> dict[str, ExperimentSpec] | None:
    origin = module_origin(module)
    if origin is None:
        return None
    return {
        d.name: _spec(d.name, module, None, d, origin)
        for d in declared_experiments(origin)
        if d.name is not None
    }


@cache
def entry_point_modules() -> tuple[str, ...]:
    """Modules named by entry points of group ``reprolab.experiments`` (read once per process)."""
    from importlib.metadata import entry_points

    return tuple(sorted({ep.value.split(":", 1)[0].strip() for ep in entry_points(group=ENTRY_POINT_GROUP)}))


def resolve_experiment(reference: str, search: Iterable[str] = ()) -> ExperimentSpec:
    """The :class:`ExperimentSpec` of ``reference``; UnknownExperimentError (one line) when there is none.

    ``search`` lists the project's experiment modules (``[tool.reprolab] experiments``).
    """
    if ":" in reference:
        module, _, function = reference.partition(":")
        origin = module_origin(module)
        if origin is None:
            raise UnknownExperimentError(f"unknown experiment {reference!r}: no importable module {module!r}")
        for declared in declared_experiments(origin):
            if declared.function == function:
                return _spec(reference, module, function, declared, origin)
        raise UnknownExperimentError(
            f"unknown experiment {reference!r}: {module} defines no function {function!r}"
        )

    line = reference.split(".", 1)[0]
    builtin = f"reprolab.experiments.{line}" if line.isidentifier() else None
    if builtin is not None:
        known = _registered_in(builtin)
        if known is not None:
            if reference in known:
                return known[reference]
            if not search and not entry_point_modules():
                raise UnknownExperimentError(
                    f"unknown experiment {reference!r}; {line} registers {sorted(known)}"
                )
    looked = [builtin] if builtin else []
    for group in (tuple(search), entry_point_modules()):
        for module in group:
            known = _registered_in(module)
            looked.append(module)
            if known and reference in known:
                return known[reference]
    raise UnknownExperimentError(
        f"unknown experiment {reference!r}: no module registers it (looked in {', '.join(looked) or 'nothing'}; "
        "list yours in [tool.reprolab] experiments, or write module:function)"
    )
