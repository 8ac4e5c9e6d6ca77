"""Parameter settings that vary over a model: mergekit's gradients and ``filter`` lists.

A setting is what a config gives for one parameter (``weight: ...``, ``density: ...``):

- a scalar: the value everywhere;
- a gradient, a list of scalars: numeric endpoints are interpolated linearly over the layers of a slice
  (``t = layer / (n_layers - 1)``, 1 for a one-layer slice, 0 outside the layers), other values (booleans,
  strings) are picked at index ``int(t * (len - 1))``;
- a filter list, a list of ``{filter: S, value: V}`` (or one such mapping): the first entry whose ``filter`` is
  absent, ``"*"`` or a substring of the tensor's name gives ``V`` (itself a scalar or a gradient); no match
  means "not set here", so a lower-precedence scope (slice, then top level, then the default) decides.

The rules are mergekit 0.1.5's (``config.evaluate_setting``, ``parameter_resolver``), arithmetic included
(``(1 - frac) * v0 + frac * v1`` in Python floats), so per-tensor values equal mergekit's bit for bit.
Every scalar is checked where the config gives it (:mod:`params`); an interpolated value lies between two
checked endpoints, and every numeric rule is an interval, so it is valid too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from reprolab.mergers.weights.params import Rule, check_param, rule_for


@dataclass(frozen=True)
class Conditional:
    filter: str | None
    value: Any  # a scalar or a gradient (tuple of scalars)


def _scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


def _numeric(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _plain(name: str, raw: Any, default: Any, where: str, rule: Rule | None = None) -> Any:
    """A scalar or a gradient, each entry checked."""
    if isinstance(raw, list):
        if not raw:
            raise ValueError(f"{where}: {name} is an empty list (give a value, a gradient or filter entries)")
        if not all(_scalar(v) for v in raw):
            raise ValueError(f"{where}: {name}: a gradient must list plain values, got {raw!r}")
        return tuple(check_param(name, v, default, where, rule) for v in raw)
    return check_param(name, raw, default, where, rule)


def parse_setting(name: str, raw: Any, default: Any, where: str, rule: Rule | None = None) -> Any:
    """Validate one parameter's setting; returns a scalar, a tuple (gradient) or a tuple of :class:`Conditional`.

    Every value, filter entries' included, is checked by the rule of the parameter ``name`` names (its last
    dotted part: ``parameters.density`` is a density), not by that of the field it sits in (``value``).
    """
    rule = rule or rule_for(name.rsplit(".", 1)[-1], default)
    if isinstance(raw, dict) or (isinstance(raw, list) and raw and all(isinstance(e, dict) for e in raw)):
        entries = [raw] if isinstance(raw, dict) else raw
        out = []
        for i, e in enumerate(entries):
            here = f"{name}[{i}]" if isinstance(raw, list) else name
            extra = sorted(map(str, set(e) - {"filter", "value"}))
            if extra or "value" not in e:
                raise ValueError(
                    f"{where}: {here} must be a mapping with `value` and an optional `filter`"
                    f"{f', got unknown key(s) {extra}' if extra else ', `value` is missing'}"
                )
            flt = e.get("filter")
            if flt is not None and (not isinstance(flt, str) or not flt):
                raise ValueError(
                    f"{where}: {here}.filter must be a non-empty string (part of a tensor name), got {flt!r}"
                )
            out.append(Conditional(flt, _plain(f"{here}.value", e["value"], default, where, rule)))
        return tuple(out)
    if isinstance(raw, list) and any(isinstance(e, dict) for e in raw):
        raise ValueError(f"{where}: {name} mixes filter entries and plain values: {raw!r}")
    return _plain(name, raw, default, where, rule)


def a_value(setting: Any) -> Any:
    """One value ``setting`` gives (a gradient's or a filter list's first): a stand-in for checks made once per config."""
    while isinstance(setting, tuple):
        setting = setting[0].value if isinstance(setting[0], Conditional) else setting[0]
    return setting


def varies(setting: Any) -> bool:
    """True for a gradient or a filter list (a value that may differ from tensor to tensor)."""
    return isinstance(setting, tuple)


_UNSET = object()


def evaluate(setting: Any, tensor_name: str, t: float) -> Any:
    """The value of ``setting`` for one tensor at layer position ``t`` (None: a filter list that does not match)."""
    if not isinstance(setting, tuple):
        return setting
    if setting and isinstance(setting[0], Conditional):
        for cond in setting:
            if cond.filter is None or cond.filter == "*" or (tensor_name and cond.filter in tensor_name):
                return evaluate(cond.value, tensor_name, t)
        return None
    if not all(_numeric(v) for v in setting):
        return setting[int(t * (len(setting) - 1))]
    scaled = t * (len(setting) - 1)
    i0 = int(scaled)
    i1 = min(len(setting) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * setting[i0] + frac * setting[i1]


def resolve(name: str, scopes: Iterable[Mapping[str, Any] | None], tensor_name: str, t: float) -> Any:
    """The first scope (highest precedence first) whose setting of ``name`` gives a value; ``_UNSET`` if none."""
    for scope in scopes:
        if scope is not None and name in scope:
            value = evaluate(scope[name], tensor_name, t)
            if value is not None:
                return value
    return _UNSET


def resolve_all(
    names: Iterable[str], scopes: Sequence[Mapping[str, Any] | None], tensor_name: str, t: float
) -> dict[str, Any]:
    """``{name: value}`` for the names some scope sets for this tensor (the others keep their defaults)."""
    out = {}
    for name in names:
        value = resolve(name, scopes, tensor_name, t)
        if value is not _UNSET:
            out[name] = value
    return out


def any_varies(scopes: Iterable[Mapping[str, Any] | None]) -> bool:
    return any(varies(v) for scope in scopes if scope for v in scope.values())
