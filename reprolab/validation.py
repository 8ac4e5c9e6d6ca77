"""Hyper-parameter checks shared by the three research lines (one convention: a wrong type is a TypeError, a
value out of range a ValueError, each naming the parameter). numpy-free, so data and diagnostics modules use it
without pulling in an estimator's dependencies."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any


def is_integer(value: Any) -> bool:
    """An integer (Python's or numpy's), not a bool: YAML and JSON read true/false where a count was meant."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number (Python's or numpy's, int or float), not a bool, a string or a complex number."""
    return isinstance(value, Real) and not isinstance(value, bool)


def check_int(name: str, value: Any, *, minimum: int) -> int:
    """An integer hyper-parameter of at least ``minimum``."""
    if not is_integer(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(name: str, value: Any, *, minimum: float = 0.0, strict: bool = False) -> float:
    """A real hyper-parameter, ``> minimum`` when ``strict`` else ``>= minimum``."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return str(value)
