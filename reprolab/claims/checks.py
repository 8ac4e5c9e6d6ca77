"""From per-seed metric values to an observed verdict.

| interval | observed verdict |
|---|---|
| point | reproduced when the statistic satisfies the bound, else not-reproduced |
| ci95  | reproduced when the whole CI does; refuted when none of it does; inside the band's edge: inconclusive when
|       | the point estimate passes, not-reproduced when it fails |
NaN or inf on any seed is an ``error`` verdict, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from reprolab.claims.schema import Expect
from reprolab.claims.stats import SUMMARIES, bootstrap_ci, probability_of_improvement

MIN_SEEDS_FOR_CI = 5


class Verdict(StrEnum):
    REPRODUCED = "reproduced"
    NOT_REPRODUCED = "not-reproduced"
    REFUTED = "refuted"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass
class Evaluation:
    verdict: Verdict
    observed: float | None = None
    ci: tuple[float, float] | None = None
    n_seeds: int = 0
    probability_of_improvement: float | None = None
    samples: list[float] = field(default_factory=list)  # per seed, what the statistic summarises
    message: str = ""
    warnings: list[str] = field(default_factory=list)


def _satisfies(value: float, low: float, high: float) -> bool:
    return low <= value <= high


def evaluate(
    expect: Expect, per_arm: Mapping[str, Sequence[float]], seeds: Sequence[int], *, label: str
) -> Evaluation:
    """Apply ``expect`` to ``per_arm`` values (arm ``""`` for a claim without arms), one value per seed."""
    for arm, values in per_arm.items():
        for seed, value in zip(seeds, values, strict=True):
            if not math.isfinite(value):
                where = f"arm {arm!r}, " if arm else ""
                return Evaluation(
                    Verdict.ERROR,
                    n_seeds=len(seeds),
                    message=f"metric {expect.metric!r} is {value} on {where}seed {seed}: non-finite values never pass",
                )

    improvement = None
    if expect.of is not None:
        treatment, control = (np.asarray(per_arm[arm], dtype=float) for arm in expect.of)
        samples = treatment - control
        improvement = probability_of_improvement(treatment, control)
    else:
        samples = np.asarray(per_arm[""], dtype=float)
        if expect.fraction is not None:
            if expect.fraction.above is not None:
                samples = (samples > expect.fraction.above).astype(float)
            else:
                samples = (samples < float(expect.fraction.below)).astype(float)

    summary = SUMMARIES[expect.statistic]
    observed = float(summary(samples))
    low, high = expect.accepted_interval()
    point_ok = _satisfies(observed, low, high)
    warnings: list[str] = []

    if expect.interval == "point":
        ci = bootstrap_ci(samples, summary, label=label) if samples.size > 1 else None
        verdict = Verdict.REPRODUCED if point_ok else Verdict.NOT_REPRODUCED
    else:
        if samples.size < MIN_SEEDS_FOR_CI:
            warnings.append(
                f"only {samples.size} seed(s) for a ci95 claim; rliable advises at least {MIN_SEEDS_FOR_CI}"
            )
        ci = bootstrap_ci(samples, summary, label=label)
        if _satisfies(ci[0], low, high) and _satisfies(ci[1], low, high):
            verdict = Verdict.REPRODUCED
        elif ci[1] < low or ci[0] > high:
            verdict = Verdict.REFUTED
        else:
            verdict = Verdict.INCONCLUSIVE if point_ok else Verdict.NOT_REPRODUCED
    return Evaluation(
        verdict,
        observed=observed,
        ci=ci,
        n_seeds=len(seeds),
        probability_of_improvement=improvement,
        samples=samples.tolist(),
        warnings=warnings,
    )
