"""Is the latest run of a kernel faster, the same or slower than its own past? A noise-robust answer.

A single comparison of two runs on a shared machine is mostly noise (the same commit "regressed" 77% under
``--benchmark-compare-fail=median:5%``). Three layers keep the verdict honest:

1. **Ratio to a reference kernel** timed in the same run, for CPU-bound kernels: a busy or slower machine slows
   the reference too, and the ratio cancels it.
2. **Step detection over the series** (as asv does): the series of run values (log of the median, or of the
   ratio) is split into constant segments by optimal partitioning under an L1 cost, with a penalty of
   ``max(log(1 + threshold), 2 sigma)`` per extra segment, sigma being a robust estimate of the run-to-run
   noise. Only a step into the last segment can make the latest run differ; a lone jittery run does not pay
   for its own segment.
3. **A rank test on the rounds' distributions** (Mann-Whitney U) between the last segment and the one before,
   plus a run-level confidence interval for the factor: a change is reported only when the factor exceeds the
   threshold, its 95% interval excludes 1 and the rank test rejects at ``alpha``.

Everything here is deterministic: no resampling, no randomness.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import mannwhitneyu

DEFAULT_THRESHOLD = 0.20  # a change under 20% is "same": run-to-run jitter reached 15% on the shared machine
DEFAULT_ALPHA = 0.01
# Below this many runs the run-to-run noise cannot be estimated (rounds within one run scatter far less than
# runs do), so no change is called: two runs 25% apart on this machine are ordinary.
MIN_RUNS = 5
_MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class Point:
    """One run of one kernel: its rounds and the value compared (median, or median / reference median)."""

    label: str  # revision (short) or date, for messages
    rounds: tuple[float, ...]
    value: float


@dataclass(frozen=True)
class Comparison:
    kernel: str
    change: str  # "faster" | "same" | "slower" | "new"
    factor: float  # latest level / previous level (time: > 1 is slower)
    ci: tuple[float, float]
    p_value: float | None
    n_runs: int
    step_at: str | None  # label of the first run of the last segment, when a step was detected
    runs_since_step: int
    normalized: bool  # compared as a ratio to the reference kernel
    note: str = ""
    is_reference: bool = False  # the reference kernel times the machine: it informs, it never regresses

    @property
    def regressed(self) -> bool:
        return self.change == "slower" and not self.is_reference

    def line(self) -> str:
        if self.change == "new":
            return f"{'new':<7} {self.kernel}  ({self.note})"
        ci = f"[{self.ci[0]:.2f}, {self.ci[1]:.2f}]"
        p = "p n/a" if self.p_value is None else f"p={self.p_value:.2g}"
        how = "ratio to reference" if self.normalized else "absolute"
        where = (
            f"; step at {self.step_at}, {self.runs_since_step} run(s) since" if self.step_at else "; no step"
        )
        note = f"; {self.note}" if self.note else ""
        if self.is_reference:
            note += "; reference kernel: this is the machine's speed, not a regression"
        return (
            f"{self.change:<7} {self.kernel}  {self.factor:.2f}x 95% CI {ci} {p} "
            f"({self.n_runs} runs, {how}{where}{note})"
        )


def robust_noise(y: np.ndarray) -> float:
    """Run-to-run standard deviation of ``y`` from successive differences (immune to a step or two)."""
    if y.size < 3:
        return 0.0
    return float(_MAD_TO_SD * np.median(np.abs(np.diff(y))) / math.sqrt(2.0))


def _l1_cost(segment: np.ndarray) -> float:
    return float(np.abs(segment - np.median(segment)).sum())


def segment_starts(y: Sequence[float], penalty: float) -> list[int]:
    """Optimal partitioning of ``y`` into constant pieces, L1 cost + ``penalty`` per piece: start indices."""
    values = np.asarray(y, dtype=float)
    n = values.size
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    previous = np.zeros(n + 1, dtype=int)
    for end in range(1, n + 1):
        for start in range(end):
            cost = best[start] + _l1_cost(values[start:end]) + penalty
            if cost < best[end] - 1e-12:
                best[end], previous[end] = cost, start
    starts, end = [], n
    while end > 0:
        starts.append(int(previous[end]))
        end = int(previous[end])
    return sorted(starts)


def merge_small_steps(y: np.ndarray, starts: list[int], min_step: float) -> list[int]:
    """Join neighbouring segments whose levels differ by less than ``min_step`` (smallest step first), as asv
    drops steps under its threshold: a change nobody would act on must not split the baseline."""
    starts = list(starts)
    while len(starts) > 1:
        bounds = [*starts, y.size]
        levels = [float(np.median(y[a:b])) for a, b in itertools.pairwise(bounds)]
        steps = [abs(b - a) for a, b in itertools.pairwise(levels)]
        smallest = int(np.argmin(steps))
        if steps[smallest] >= min_step:
            break
        del starts[smallest + 1]
    return starts


def compare_series(
    kernel: str,
    points: Sequence[Point],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    normalized: bool = False,
    max_runs: int = 200,
) -> Comparison:
    """Compare the latest point of ``points`` (oldest first) with the kernel's own past."""
    points = list(points)[-max_runs:]
    if len(points) < 2:
        return Comparison(kernel, "new", 1.0, (1.0, 1.0), None, len(points), None, 0, normalized,
                          note="one run so far; nothing to compare")
    y = np.log([p.value for p in points])
    n = y.size
    # Floor the run-to-run noise by the spread within runs: a series of two runs has no successive differences.
    within = float(np.median([_MAD_TO_SD * np.median(np.abs(np.log(p.rounds) - np.median(np.log(p.rounds))))
                              for p in points]))
    sigma = max(robust_noise(y), within, 0.01)
    # A BIC-like penalty (noise x log n) keeps jitter from being cut into segments; a step that persists for
    # two runs or more pays for its segment, a step in the latest run alone is caught by the tip test below.
    penalty = max(math.log1p(threshold), 2.0 * sigma * math.log(n))
    starts = merge_small_steps(y, segment_starts(y, penalty), math.log1p(threshold))
    last = starts[-1]
    if last == 0 or last == n - 1:
        # No step, or only the latest run stands apart: the tip against the segment it would continue.
        last = n - 1
        prev = starts[-2] if len(starts) > 1 and starts[-1] == n - 1 else starts[-1]
        stepped = len(starts) > 1 and starts[-1] == n - 1
    else:
        prev = starts[-2]
        stepped = True
    latest_seg, prev_seg = y[last:], y[prev:last]
    log_factor = float(np.median(latest_seg) - np.median(prev_seg))
    se = sigma * math.sqrt(1.0 / latest_seg.size + 1.0 / prev_seg.size)
    factor = math.exp(log_factor)
    ci = (math.exp(log_factor - 1.96 * se), math.exp(log_factor + 1.96 * se))
    scale = [p.value / float(np.median(p.rounds)) for p in points]  # rounds in the compared unit
    after = [r * scale[i] for i in range(last, len(points)) for r in points[i].rounds]
    before = [r * scale[i] for i in range(prev, last) for r in points[i].rounds]
    p_value, note = None, ""
    if len(after) >= 3 and len(before) >= 3:
        p_value = float(mannwhitneyu(after, before, alternative="two-sided").pvalue)
    else:
        note = "too few rounds for the rank test (record with --benchmark-save-data)"
    significant = p_value is None or p_value < alpha
    change = "same"
    if significant and log_factor > math.log1p(threshold) and ci[0] > 1.0:
        change = "slower"
    elif significant and -log_factor > math.log1p(threshold) and ci[1] < 1.0:
        change = "faster"
    if len(points) < MIN_RUNS and change != "same":
        change = "same"
        note = "; ".join(filter(None, [f"{n} runs: too few to call a change (needs {MIN_RUNS})", note]))
    if change == "same" and not stepped:
        note = "; ".join(filter(None, ["no step in the series", note]))
    shifted = change != "same" or stepped
    return Comparison(kernel, change, factor, ci, p_value, n, points[last].label if shifted else None,
                      n - last if shifted else 0, normalized, note=note)
