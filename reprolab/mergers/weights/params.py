"""Types and ranges of merge-method parameters, checked where a config gives them (one line naming the field).

A rule per parameter name (the names mean the same thing in every method; a method whose parameter of that
name means something else declares its own rule, ``register(..., rules=...)``, e.g. slerp's ``t``); a parameter
without a rule is checked against the type of its default, so a new method's parameters are never left unchecked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any


@dataclass(frozen=True)
class Number:
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, Real):
            return f"must be a number, got {value!r}"
        try:
            v = float(value)
        except OverflowError:  # an integer beyond float range (YAML reads 400 digits as an int)
            v = math.inf
        if not math.isfinite(v):
            return f"must be a finite number, got {value!r}"
        below = v < self.low or (self.low_open and v == self.low)
        above = v > self.high or (self.high_open and v == self.high)
        if below or above:
            lo = "(" if self.low_open else "["
            hi = ")" if self.high_open else "]"
            return f"must lie in {lo}{self.low:g}, {self.high:g}{hi}, got {value!r}"
        return None


@dataclass(frozen=True)
class Integer:
    low: int | None = None

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r}"
        if self.low is not None and value < self.low:
            return f"must be >= {self.low}, got {value!r}"
        return None


@dataclass(frozen=True)
class Boolean:
    def check(self, value: Any) -> str | None:
        if not isinstance(value, bool):
            return f"must be a YAML boolean (true/false, unquoted), got {value!r}"
        return None


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]

    def check(self, value: Any) -> str | None:
        if not any(value == o and type(value) is type(o) for o in self.options):
            return f"must be one of {list(self.options)}, got {value!r}"
        return None


Rule = Number | Integer | Boolean | Choice

RULES: Mapping[str, Rule] = {
    "weight": Number(),
    "density": Number(0.0, 1.0, low_open=True),
    "lambda": Number(),
    "lambda1": Number(),
    "floor": Number(0.0),
    "gamma": Number(0.0, 1.0),
    "scale": Number(),  # passthrough
    "t": Number(0.0),  # nearswap: similarity threshold (slerp's interpolation t has a rule of its own)
    "epsilon": Number(0.0, 1.0, high_open=True),  # DELLA: half-width of the keep-probability range
    "select_topk": Number(0.0, 1.0, low_open=True),  # SCE: share of entries (highest variance) kept
    "max_iter": Integer(0),  # karcher
    "tol": Number(0.0),  # karcher: convergence tolerance
    "eps": Number(0.0),  # multislerp: added to norms
    "r": Number(),  # ramplus_tl: boost of unique changes per unit of rho
    "alpha": Number(0.0),  # ramplus_tl: cap on rho
    "normalize": Boolean(),
    "int8_mask": Boolean(),
    "trim_scope": Choice(("tensor", "model")),
    "consensus": Choice(("sum", "count")),
    "tie_break": Choice(("index", "mergekit")),
    "rescale": Choice((True, False, "l1", "paper", "none")),
    "variant": Choice(("official", "port")),
}


def rule_for(name: str, default: Any) -> Rule:
    """The rule for parameter ``name``; without one, the type of its default decides."""
    if name in RULES:
        return RULES[name]
    if isinstance(default, bool):
        return Boolean()
    if isinstance(default, Real):
        return Number()
    return Choice((default,))


def check_param(name: str, value: Any, default: Any, where: str, rule: Rule | None = None) -> Any:
    """Return ``value`` if it is a valid ``name``; else raise ValueError ``"{where}: {name} must ..."``.

    ``name`` may carry a prefix for the message (``parameters.density``); the rule is looked up by its last part
    unless ``rule`` is given (a method whose parameter of that name has another range, e.g. slerp's ``t``).
    """
    rule = rule or rule_for(name.rsplit(".", 1)[-1], default)
    problem = rule.check(value)
    if problem:
        raise ValueError(f"{where}: {name} {problem}")
    if isinstance(rule, Integer):
        return value
    return float(value) if isinstance(value, Real) and not isinstance(value, bool) else value
