"""From per-seed metric values to an observed verdict.

| interval | observed verdict |
|---|---|
| point | reproduced when the statistic satisfies the bound, else not-reproduced |
| ci95  | reproduced when the whole CI does; refuted when none of it does; inside the band's edge: inconclusive when
|       | the point estimate passes, not-reproduced when it fails; error when no interval method serves the
|       | statistic at the claim's seed count (see :mod:`reprolab.claims.stats`) |
NaN or inf on any seed is an ``error`` verdict, never a pass.

Guards (``valid_when``) are checked on the point statistic of another metric of the same runs. A failed guard
makes a reproduced, not-reproduced or refuted verdict ``inconclusive``: outside the regime the note assumes,
the run says nothing about the claim either way. An ``error`` stays ``error``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from reprolab.claims.schema import Expect, Guard
from reprolab.claims.stats import (
    SUMMARIES,
    NoIntervalError,
    confidence_interval,
    paired_differences,
    probability_of_improvement,
    probability_of_improvement_interval,
)


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
    probability_of_improvement: float | None = None  # rliable's P(treatment > control) over all pairs
    probability_of_improvement_ci: tuple[float, float] | None = None
    samples: list[float] = field(default_factory=list)  # per seed, what the statistic summarises
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    guards: list[GuardOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class GuardOutcome:
    """One guard on one arm: what it asked, the value the runs gave, whether it held."""

    guard: str  # e.g. "mean(hard_fraction) <= 0.95"
    arm: str  # "" for a claim without arms
    value: float
    passed: bool
    why: str

    def describe(self) -> str:
        return describe_guard(self.to_dict())

    def to_dict(self) -> dict[str, object]:
        return {
            "guard": self.guard,
            "arm": self.arm,
            "value": self.value,
            "passed": self.passed,
            "why": self.why,
        }


def describe_guard(outcome: Mapping[str, object]) -> str:
    """One line for a guard outcome (a :meth:`GuardOutcome.to_dict`, as stored in results and history)."""
    where = f" on arm {outcome['arm']!r}" if outcome.get("arm") else ""
    state = "holds" if outcome["passed"] else "FAILED"
    return f"guard {outcome['guard']}{where} {state}: {float(outcome['value']):.6g}"  # type: ignore[arg-type]


Runs = Mapping[str, Sequence[Mapping[str, float]]]
"""Per arm, the metrics dict of each seed's run (in seed order)."""


def check_guards(guards: Sequence[Guard], runs: Runs, seeds: Sequence[int]) -> list[GuardOutcome] | str:
    """Each guard's point statistic per arm it applies to, or an error message (missing or non-finite metric)."""
    outcomes: list[GuardOutcome] = []
    for guard in guards:
        arms = [guard.arm] if guard.arm is not None else list(runs)
        for arm in arms:
            where = f"arm {arm!r}, " if arm else ""
            values = []
            for seed, metrics in zip(seeds, runs[arm], strict=True):
                if guard.metric not in metrics:
                    return (
                        f"valid_when: the experiment returned no metric {guard.metric!r} "
                        f"(it returned {sorted(metrics)})"
                    )
                value = float(metrics[guard.metric])
                if not math.isfinite(value):
                    return f"valid_when: metric {guard.metric!r} is {value} on {where}seed {seed}"
                values.append(value)
            statistic = float(SUMMARIES[guard.statistic](np.asarray(values, dtype=float)))
            if not math.isfinite(statistic):
                return f"valid_when: {guard.describe()} is {statistic} on {where}the per-seed values overflow it"
            low, high = guard.accepted_interval()
            outcomes.append(
                GuardOutcome(guard.describe(), arm, statistic, _satisfies(statistic, low, high), guard.why)
            )
    return outcomes


def apply_guards(
    evaluation: Evaluation, guards: Sequence[Guard], runs: Runs, seeds: Sequence[int]
) -> Evaluation:
    """Attach guard outcomes; a failed guard turns any verdict but ``error`` into ``inconclusive``."""
    if not guards or evaluation.verdict == Verdict.ERROR:
        return evaluation
    outcomes = check_guards(guards, runs, seeds)
    if isinstance(outcomes, str):
        evaluation.verdict, evaluation.message = Verdict.ERROR, outcomes
        return evaluation
    evaluation.guards = outcomes
    failed = [outcome for outcome in outcomes if not outcome.passed]
    if failed:
        evaluation.message = "; ".join(
            [
                f"outside the note's regime, so inconclusive (the bound alone said {evaluation.verdict}): "
                + ", ".join(outcome.describe() for outcome in failed),
                *([evaluation.message] if evaluation.message else []),
            ]
        )
        evaluation.verdict = Verdict.INCONCLUSIVE
    return evaluation


def _satisfies(value: float, low: float, high: float) -> bool:
    return low <= value <= high


def evaluate(
    expect: Expect, per_arm: Mapping[str, Sequence[float]], seeds: Sequence[int], *, label: str
) -> Evaluation:
    """Apply ``expect`` to ``per_arm`` values (arm ``""`` for a claim without arms), one value per seed."""
    for arm, values in per_arm.items():
        if len(values) != len(seeds):
            where = f"arm {arm!r}" if arm else "the claim"
            return Evaluation(
                Verdict.ERROR,
                n_seeds=len(seeds),
                message=f"{where} has {len(values)} value(s) for {len(seeds)} seed(s): every seed needs one",
            )
        for seed, value in zip(seeds, values, strict=True):
            if not math.isfinite(value):
                where = f"arm {arm!r}, " if arm else ""
                return Evaluation(
                    Verdict.ERROR,
                    n_seeds=len(seeds),
                    message=f"metric {expect.metric!r} is {value} on {where}seed {seed}: non-finite values never pass",
                )

    improvement = improvement_ci = None
    if expect.of is not None:
        treatment, control = (np.asarray(per_arm[arm], dtype=float) for arm in expect.of)
        samples = paired_differences(treatment, control, expect.of)
        improvement = float(probability_of_improvement(treatment, control))
        improvement_ci = probability_of_improvement_interval(treatment, control, label=label)
    else:
        samples = np.asarray(per_arm[""], dtype=float)
        if expect.fraction is not None:
            if expect.fraction.above is not None:
                samples = (samples > expect.fraction.above).astype(float)
            else:
                samples = (samples < float(expect.fraction.below)).astype(float)

    observed = float(SUMMARIES[expect.statistic](samples))
    if not math.isfinite(observed):  # finite seeds whose sum, difference or spread overflows a float
        return Evaluation(
            Verdict.ERROR,
            n_seeds=len(seeds),
            samples=samples.tolist(),
            message=f"{expect.describe()} is {observed}: the per-seed values overflow it; non-finite values never pass",
        )
    low, high = expect.accepted_interval()
    point_ok = _satisfies(observed, low, high)
    result = Evaluation(
        Verdict.REPRODUCED if point_ok else Verdict.NOT_REPRODUCED,
        observed=observed,
        n_seeds=len(seeds),
        probability_of_improvement=improvement,
        probability_of_improvement_ci=improvement_ci,
        samples=samples.tolist(),
    )
    try:
        result.ci = confidence_interval(samples, expect.statistic, label=label)
    except NoIntervalError as exc:
        if expect.interval == "ci95":  # the verdict needs the interval: no method, no verdict
            result.verdict, result.message = Verdict.ERROR, f"interval: ci95: {exc}"
        return result  # a point claim just shows no interval
    if not all(math.isfinite(side) for side in result.ci):
        result.verdict = Verdict.ERROR
        result.message = f"the 95% interval is {list(result.ci)}: the per-seed values overflow it"
        return result
    if expect.interval == "ci95":
        ci_low, ci_high = result.ci
        if _satisfies(ci_low, low, high) and _satisfies(ci_high, low, high):
            result.verdict = Verdict.REPRODUCED
        elif ci_high < low or ci_low > high:
            result.verdict = Verdict.REFUTED
        else:
            result.verdict = Verdict.INCONCLUSIVE if point_ok else Verdict.NOT_REPRODUCED
    return result
