"""The reachability audit: prove, without running anything, that every reproduce claim can both pass and fail.

A check that cannot fail (or cannot pass) says nothing about the note, whatever the experiment does. From the
metric ranges each experiment declares (``@experiment(..., metrics={name: (low, high)})``, read statically by
:func:`reprolab.claims.resolve.resolve_experiment`) and the claim's seed count, the audit derives the values
the claim's statistic can take, and asks:

- can the statistic satisfy the bound, and can it miss it? (and the same for each ``valid_when`` guard);
- for ``interval: ci95``: does an interval method cover at this seed count, and can its interval lie inside the
  bound at all? (a Clopper-Pearson interval from 5 seeds never lies above 0.8: it needs 17).

What a statistic can take, for a metric declared in [a, b] over n seeds:

| statistic | attainable |
|---|---|
| mean, median, iqm, min, max | [a, b] |
| paired_difference | [a - b, b - a] (treatment and control both in [a, b]); {0} when both arms run one config |
| std | [0, (b - a) * sqrt(floor(n/2) * ceil(n/2) / (n (n - 1)))] (half the seeds at each end); {0} at one seed |
| fraction (above / below c) | {0, 1/n, ..., 1}; {0} or {1} when c lies outside [a, b] so the predicate is fixed |

The audit imports no torch or JAX (only the loader and :mod:`reprolab.claims.stats`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np

from reprolab.claims.loader import ClaimFileError, LoadedClaim, load_claims
from reprolab.claims.resolve import ExperimentSpec, resolve_experiment
from reprolab.claims.schema import MAX_SEEDS, Expect, Guard, GuardStatistic
from reprolab.claims.stats import NoIntervalError, clopper_pearson_bounds, interval_method
from reprolab.experiments.registry import UnknownExperimentError

INF = math.inf
SUMMARY_STATISTICS = get_args(GuardStatistic)  # of the values themselves: mean, median, iqm, min, max


@dataclass(frozen=True)
class Attainable:
    """The values a statistic can take: the closed interval [low, high], or only ``points`` when given."""

    low: float
    high: float
    points: tuple[float, ...] | None = None

    def can_pass(self, low: float, high: float) -> bool:
        if self.points is not None:
            return any(low <= p <= high for p in self.points)
        return self.low <= high and low <= self.high

    def can_fail(self, low: float, high: float) -> bool:
        if self.points is not None:
            return any(not low <= p <= high for p in self.points)
        return self.low < low or self.high > high

    def describe(self) -> str:
        if self.points is not None:
            if len(self.points) == 1:
                return f"always {self.points[0]:g}"
            n = len(self.points) - 1
            return (
                f"only {{0, 1/{n}, ..., 1}}"
                if n > 2
                else "only {" + ", ".join(f"{p:g}" for p in self.points) + "}"
            )
        return f"in [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class AuditIssue:
    item: LoadedClaim
    reason: str

    def __str__(self) -> str:
        return f"{self.item.location}: {self.item.id}: {self.reason}"


def _range(value: object) -> tuple[float, float] | None:
    """A declared (low, high) as floats with +-inf for None; None when it is not a pair of numbers or None."""
    if not (isinstance(value, tuple | list) and len(value) == 2):
        return None
    bounds = []
    for side, default in zip(value, (-INF, INF), strict=True):
        if side is None:
            bounds.append(default)
        elif isinstance(side, int | float) and not isinstance(side, bool) and not math.isnan(side):
            bounds.append(float(side))
        else:
            return None
    return (bounds[0], bounds[1]) if bounds[0] <= bounds[1] else None


def statistic_range(
    statistic: str, metric_range: tuple[float, float], n_seeds: int, expect: Expect | None = None
) -> Attainable:
    """What ``statistic`` over ``n_seeds`` values of a metric in ``metric_range`` can take."""
    a, b = metric_range
    if statistic in SUMMARY_STATISTICS:
        return Attainable(a, b)
    if statistic == "paired_difference":
        return Attainable(a - b, b - a)  # inf - inf never occurs: an unbounded side makes both sides inf
    if statistic == "std":
        if n_seeds == 1:
            return Attainable(0.0, 0.0, (0.0,))
        # the sample std (ddof=1) is largest with floor(n/2) seeds at one end and the rest at the other: for odd n
        # that is (b - a)/2 * sqrt((n + 1)/n), below the even-n (b - a)/2 * sqrt(n/(n - 1))
        low_end = n_seeds // 2
        spread = math.sqrt(low_end * (n_seeds - low_end) / (n_seeds * (n_seeds - 1.0)))
        return Attainable(0.0, (b - a) * spread)
    if statistic == "fraction":
        assert expect is not None and expect.fraction is not None
        above, below = expect.fraction.above, expect.fraction.below
        always_false = (above is not None and above >= b) or (below is not None and below <= a)
        always_true = (above is not None and above < a) or (below is not None and below > b)
        if always_false or always_true:
            value = 1.0 if always_true else 0.0
            return Attainable(value, value, (value,))
        return Attainable(0.0, 1.0, tuple(k / n_seeds for k in range(n_seeds + 1)))
    raise ValueError(f"unknown statistic {statistic!r}")


def _bound_issue(what: str, attainable: Attainable, low: float, high: float, bound: str) -> str | None:
    if not attainable.can_pass(low, high):
        return f"{what} can never pass: it is {attainable.describe()}, never {bound}"
    if not attainable.can_fail(low, high):
        return f"{what} can never fail: it is {attainable.describe()}, always {bound}"
    return None


def fraction_ci_seeds(n_from: int, n_to: int, low: float, high: float) -> int | None:
    """The fewest seeds in n_from..n_to for which some count's Clopper-Pearson interval lies in [low, high].

    The interval of k of n seeds contains k/n and has positive width, its lower end is below 1 and its upper end
    above 0: a bound that needs either (``at_least: 1``, ``at_most: 0``, a zero-width ``between``) is never met,
    without computing one. Otherwise only counts with k/n near [low, high] can serve, and seed counts are
    tried in blocks that double (1, 2, 4, ... seed counts per call), each one vectorised call.
    """
    if low >= 1.0 or high <= 0.0 or low >= high:
        return None
    start, block = n_from, 1
    while start <= n_to:
        ns = np.arange(start, min(start + block, n_to + 1))
        # k/n within [low, high], give or take one count (a k at the edge is not lost to rounding)
        first = np.clip(np.ceil(max(low, 0.0) * ns) - 1, 0, ns)
        last = np.clip(np.floor(min(high, 1.0) * ns) + 1, 0, ns)
        counts = np.maximum(last - first + 1, 0).astype(int)
        n = np.repeat(ns, counts)
        k = np.repeat(first, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        ci_low, ci_high = clopper_pearson_bounds(k, n)
        served = n[(ci_low >= low) & (ci_high <= high)]
        if served.size:
            return int(served.min())
        start, block = start + block, 2 * block
    return None


def _ci_issue(expect: Expect, n_seeds: int, attainable: Attainable | None) -> str | None:
    """Why the claim's 95% interval can never satisfy its bound (no method, or too few seeds for it)."""
    try:
        interval_method(expect.statistic, n_seeds)
    except NoIntervalError as exc:
        return f"interval: ci95: {exc}"
    if expect.statistic == "fraction" and (
        attainable is None or attainable.points is None or len(attainable.points) > 1
    ):
        needed = fraction_ci_seeds(n_seeds, MAX_SEEDS, *expect.accepted_interval())
        if needed != n_seeds:
            more = f"needs >= {needed} seeds" if needed else f"no seed count up to {MAX_SEEDS} serves it"
            return (
                f"interval: ci95: the Clopper-Pearson interval of a fraction of {n_seeds} seeds never lies "
                f"{expect.describe_bound()} ({more})"
            )
    return None


def audit_claim(item: LoadedClaim, declared: ExperimentSpec | None) -> list[str]:
    """Why this reproduce claim is fixed by construction or cannot be audited; empty when it is falsifiable."""
    claim, expect = item.claim, item.claim.expect
    n = len(claim.seed_list)
    reasons: list[str] = []
    ranges = declared.metric_ranges if declared is not None else None
    if ranges is None:
        reasons.append(
            f"range undeclared: experiment {claim.experiment!r} declares no metric ranges "
            "(metrics={name: (low, high)} on @experiment)"
        )

    def metric_range(metric: str) -> tuple[float, float] | None:
        if ranges is None:
            return None
        declared_range = _range(ranges.get(metric))
        if declared_range is None:
            reasons.append(
                f"range undeclared: experiment {claim.experiment!r} declares no (low, high) for metric {metric!r}"
            )
        return declared_range

    expect_range = metric_range(expect.metric)
    attainable = None
    statistic = expect.describe().removesuffix(" (whole 95% CI)").removesuffix(" " + expect.describe_bound())
    what = f"{statistic} over {n} seed(s)"
    configs = claim.arm_configs()
    if expect.of is not None and configs[expect.of[0]] == configs[expect.of[1]]:
        # experiments are deterministic in (config, seed): two arms of one config give equal runs
        attainable = Attainable(0.0, 0.0, (0.0,))
        what += f" (arms {expect.of[0]!r} and {expect.of[1]!r} run the same config)"
    elif expect_range is not None:
        attainable = statistic_range(expect.statistic, expect_range, n, expect)
    if attainable is not None:
        issue = _bound_issue(what, attainable, *expect.accepted_interval(), expect.describe_bound())
        if issue:
            reasons.append(issue)
    if expect.interval == "ci95":
        issue = _ci_issue(expect, n, attainable)
        if issue:
            reasons.append(issue)
    for index, guard in enumerate(claim.valid_when):
        guard_range = metric_range(guard.metric)
        if guard_range is not None:
            guard_attainable = statistic_range(guard.statistic, guard_range, n)
            guard_what = f"valid_when[{index}] {guard.describe().removesuffix(' ' + guard.describe_bound())}"
            issue = _bound_issue(guard_what, guard_attainable, *guard.accepted_interval(), guard.describe_bound())
            if issue:
                reasons.append(issue)
    issue = _own_metric_guard_issue(expect, claim.valid_when, expect_range or (-INF, INF), claim.arms is None)
    if issue:
        reasons.append(f"{what} {issue}")
    return reasons


def _implied(guard_statistic: str, statistic: str, low: float, high: float) -> tuple[float, float]:
    """Where ``statistic`` of the seeds must lie when ``guard_statistic`` of the same seeds is in [low, high]."""
    if guard_statistic == statistic:
        return low, high
    if guard_statistic == "min" or statistic == "max":  # min <= mean, median, iqm <= max
        return low, INF
    if guard_statistic == "max" or statistic == "min":
        return -INF, high
    return -INF, INF  # mean, median and iqm bound one another nowhere


def _own_metric_guard_issue(
    expect: Expect, guards: Sequence[Guard], metric_range: tuple[float, float], single_arm: bool
) -> str | None:
    """Guards on the claim's own metric and statistic decide the verdict when every value they allow passes the
    bound (a failure is always inconclusive) or fails it (a pass is). Failing verdicts need a failing point
    estimate, so this holds for ``interval: ci95`` too."""
    own = [
        (index, guard)
        for index, guard in enumerate(guards)
        if guard.metric == expect.metric and single_arm and expect.statistic in SUMMARY_STATISTICS
    ]
    if not own:
        return None
    low, high = metric_range
    for _, guard in own:
        implied = _implied(guard.statistic, expect.statistic, *guard.accepted_interval())
        low, high = max(low, implied[0]), min(high, implied[1])
    if low > high:
        return None  # the guards can never hold together: reported with each guard
    named = ", ".join(f"valid_when[{index}]" for index, _ in own)
    bound_low, bound_high = expect.accepted_interval()
    where = f"where {named} on its own metric holds, {expect.statistic}({expect.metric}) is in [{low:g}, {high:g}]"
    if bound_low <= low and high <= bound_high:
        return f"can never fail: {where}, always {expect.describe_bound()} (a failure is inconclusive)"
    if high < bound_low or low > bound_high:
        return f"can never pass: {where}, never {expect.describe_bound()} (a pass is inconclusive)"
    return None


def _declaration(experiment: str, search: Sequence[str] = ()) -> ExperimentSpec | None:
    try:
        return resolve_experiment(experiment, search)
    except UnknownExperimentError:
        return None


def audit_claims(
    items: Iterable[LoadedClaim], *, search: Sequence[str] = ()
) -> tuple[list[AuditIssue], int]:
    """Audit every reproduce claim (recorded/consistency claims recompute exact arithmetic: nothing to reach).

    ``search``: the project's experiment modules (``[tool.reprolab] experiments``). Returns the issues, one per
    reason, and how many claims were audited.
    """
    issues: list[AuditIssue] = []
    audited = 0
    for item in items:
        if item.claim.kind != "reproduce":
            continue
        audited += 1
        issues.extend(
            AuditIssue(item, reason) for reason in audit_claim(item, _declaration(item.claim.experiment, search))
        )
    return issues, audited


def audit_paths(paths: Sequence[Path | str]) -> tuple[list[AuditIssue], list[ClaimFileError], int]:
    """Load and audit every claim below ``paths``: (issues, load errors, number of claims audited)."""
    items, errors = load_claims(paths)
    issues, audited = audit_claims(items)
    return issues, errors, audited
