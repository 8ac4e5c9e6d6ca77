"""Regression detection on synthetic, seeded series: quiet on jitter, catches a 1.5x step in one kernel only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from reprolab.bench.compare import Point, compare_series, segment_starts
from reprolab.bench.kernels import KernelConfig, KernelInfo
from reprolab.bench.series import compare_all
from reprolab.bench.store import BenchRun, KernelRun

pytestmark = pytest.mark.fast

KERNELS = [f"benchmarks/test_k.py::test_kernel_{i}" for i in range(6)]
REFERENCE = "benchmarks/test_bench_reference.py::test_bench_reference_kernel"


def _runs(
    seed: int,
    *,
    n_runs: int = 20,
    rounds: int = 7,
    machine_jitter: float = 0.0,
    kernel_jitter: float = 0.075,
    step: dict[str, tuple[float, int]] | None = None,
    machine_step: tuple[float, int] | None = None,
) -> list[BenchRun]:
    """``kernel_jitter``: each kernel's own run-to-run factor, uniform in 1 +- it (+-7.5%: runs within 15% of
    each other); ``machine_jitter``: a factor shared by every kernel of a run and the reference (a busy host)."""
    rng = np.random.default_rng(seed)
    runs = []
    for index in range(n_runs):
        machine = 1 + rng.uniform(-machine_jitter, machine_jitter)
        if machine_step and index >= machine_step[1]:
            machine *= machine_step[0]
        kernels = []
        for position, name in enumerate([*KERNELS, REFERENCE]):
            factor = machine * (1 + rng.uniform(-kernel_jitter, kernel_jitter))
            if step and name in step and index >= step[name][1]:
                factor *= step[name][0]
            values = 0.01 * (position + 1) * factor * (1 + 0.02 * rng.standard_normal(rounds))
            kernels.append(KernelRun(name, name.split("::")[-1], tuple(values), float(np.median(values))))
        runs.append(
            BenchRun(f"run{index}", f"2026-01-{index + 1:02d}T00:00:00", f"{index:040x}", None, False,
                     "host: cpu", "synthetic", tuple(kernels))
        )
    return runs


def _changes(runs: list[BenchRun], reference: str | None = "test_bench_reference_kernel") -> dict[str, str]:
    """Per kernel: its change, or "regressed" when it would fail ``--fail-on-regression``."""
    config = KernelConfig(reference=reference, kernels=(KernelInfo(match="test_bench_reference_kernel"),))
    return {
        item.kernel: "regressed" if c.regressed else c.change for item, c in compare_all(runs, config)
    }


@pytest.mark.parametrize("seed", range(6))
def test_quiet_on_runs_that_only_jitter(seed: int) -> None:
    changes = _changes(_runs(seed, machine_jitter=0.15))
    changes.pop(REFERENCE)  # times the busy machine itself: it may say "slower", it never regresses
    assert set(changes.values()) == {"same"}, changes


@pytest.mark.parametrize("seed", range(6))
def test_quiet_without_a_reference_when_each_kernel_jitters_within_15_percent(seed: int) -> None:
    changes = _changes(_runs(seed), reference=None)
    assert set(changes.values()) == {"same"}, changes


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("since", [19, 16, 10])
def test_a_1_5x_step_in_one_kernel_is_caught_and_only_that_one(seed: int, since: int) -> None:
    stepped = KERNELS[3]
    changes = _changes(_runs(100 + seed, machine_jitter=0.15, step={stepped: (1.5, since)}))
    assert changes.pop(stepped) == "regressed"
    assert changes.pop(REFERENCE) != "regressed"
    assert set(changes.values()) == {"same"}, changes


@pytest.mark.parametrize("seed", range(6))
def test_a_whole_machine_slowdown_cancels_in_the_ratio_to_the_reference(seed: int) -> None:
    runs = _runs(200 + seed, machine_step=(1.5, 19))
    normalised = _changes(runs)
    assert all(change == "same" for kernel, change in normalised.items() if kernel != REFERENCE), normalised
    assert normalised[REFERENCE] == "slower"  # the machine got slower: reported, never a regression
    absolute = _changes(runs, reference=None)
    assert set(absolute.values()) == {"regressed"}  # what a naive comparison would have flagged


def test_a_speed_up_is_reported_as_faster_with_its_factor() -> None:
    runs = _runs(7, step={KERNELS[0]: (1 / 1.5, 15)})
    config = KernelConfig(reference="test_bench_reference_kernel")
    result = {item.kernel: c for item, c in compare_all(runs, config)}[KERNELS[0]]
    assert result.change == "faster" and not result.regressed
    assert result.factor == pytest.approx(1 / 1.5, rel=0.1)
    assert result.ci[0] < result.factor < result.ci[1] < 1
    assert result.runs_since_step == 5 and result.p_value is not None and result.p_value < 0.01
    assert "faster" in result.line() and KERNELS[0] in result.line()


def test_deterministic() -> None:
    first = _changes(_runs(3, step={KERNELS[1]: (1.5, 19)}))
    assert first == _changes(_runs(3, step={KERNELS[1]: (1.5, 19)}))


def test_a_single_run_is_new_not_a_verdict() -> None:
    comparison = compare_series("k", [Point("r0", (0.1, 0.1, 0.1), 0.1)])
    assert comparison.change == "new" and not comparison.regressed


def test_without_rounds_the_rank_test_is_skipped_and_said() -> None:
    points = [Point(f"r{i}", (v,), v) for i, v in enumerate([0.1, 0.102, 0.099, 0.101, 0.1, 0.098, 0.2])]
    comparison = compare_series("k", points)
    assert comparison.p_value is None and "--benchmark-save-data" in comparison.note


def test_segmentation_finds_one_clean_step() -> None:
    y = np.log([1.0] * 8 + [1.5] * 6)
    assert segment_starts(y, penalty=0.2) == [0, 8]


def test_too_few_runs_never_call_a_change() -> None:
    """Rounds within a run agree to 1%; two runs 30% apart are still ordinary on a shared machine."""
    rounds = [tuple(v * (1 + 0.01 * e) for e in (-1, 0, 1, 0.5, -0.5)) for v in (0.1, 0.13)]
    comparison = compare_series("k", [Point(f"r{i}", r, r[1]) for i, r in enumerate(rounds)])
    assert comparison.change == "same" and "too few" in comparison.note


def test_series_are_kept_per_machine() -> None:
    runs = _runs(1, step={KERNELS[2]: (1.5, 19)})
    moved = [dataclasses.replace(run, machine="other: cpu") if i == 19 else run for i, run in enumerate(runs)]
    changes = _changes(moved)
    assert set(changes.values()) == {"new"}  # the latest run is on another machine: its series starts anew
