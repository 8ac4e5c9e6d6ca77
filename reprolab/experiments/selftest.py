"""Small experiments that exercise the claims engine itself (used by its tests and the docs' examples).

They are real experiments in every respect the engine sees (registered, cached, run in worker processes),
with behaviour chosen to provoke each verdict: a constant, a noisy draw, an exception, a NaN, a slow run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from reprolab.experiments.registry import config_value, experiment


@experiment("selftest.constant", metrics={"value": (None, None)}, config_keys=("value",))
def constant(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    """Returns ``config.value`` whatever the seed."""
    del seed
    return {"value": float(config_value(config, "value", kind=(int, float)))}


@experiment("selftest.noisy", metrics={"value": (None, None)}, config_keys=("loc", "scale"))
def noisy(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    """One draw of N(loc, scale) from a generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    loc = float(config_value(config, "loc", 0.0, kind=(int, float)))
    scale = float(config_value(config, "scale", 1.0, kind=(int, float)))
    return {"value": float(rng.normal(loc, scale))}


@experiment("selftest.fails", metrics={"value": (None, None)}, config_keys=())
def fails(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    raise RuntimeError(f"selftest.fails raised on purpose (seed {seed})")


@experiment("selftest.nan", metrics={"value": (None, None)}, config_keys=("nan_seed",))
def nan(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    return {"value": math.nan if seed == config_value(config, "nan_seed", 0, kind=int) else 1.0}


@experiment("selftest.sleep", metrics={"value": (0, None)}, config_keys=("seconds",))
def sleep(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    time.sleep(float(config_value(config, "seconds", kind=(int, float))))
    return {"value": float(seed)}


@experiment("selftest.fraction", metrics={"value": (0.0, 1.0), "other": (0.0, 1.0)}, config_keys=("value", "other"))
def fraction(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    """Returns ``config.value`` and ``config.other`` as metrics declared to lie in [0, 1], whether they do or not
    (so a value outside its declared range can be provoked)."""
    del seed
    return {name: float(config_value(config, name, 0.5, kind=(int, float))) for name in ("value", "other")}


@experiment("selftest.undeclared")
def undeclared(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    """Declares no metrics, so an unknown metric can only be caught after the run."""
    return {"value": float(seed)}
