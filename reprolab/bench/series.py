"""From stored runs to one series per kernel: its points, its peer's figure per run, the comparison."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reprolab.bench.compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, Comparison, Point, compare_series
from reprolab.bench.kernels import KernelConfig, KernelInfo
from reprolab.bench.store import BenchRun, KernelRun


@dataclass
class KernelSeries:
    kernel: str
    info: KernelInfo
    machine: str
    normalized: bool
    points: list[Point] = field(default_factory=list)
    medians: list[float] = field(default_factory=list)  # seconds, per run (what the page plots)
    peer: list[float | None] = field(default_factory=list)  # the peer's seconds in the same run, or None
    runs: list[dict[str, Any]] = field(default_factory=list)  # revision, date, machine per point

    def to_dict(self, comparison: Comparison | None = None) -> dict[str, Any]:
        return {
            "kernel": self.kernel,
            "machine": self.machine,
            "normalized": self.normalized,
            "target": self.info.target,
            "target_seconds": self.info.target_seconds,
            "peer_name": self.info.peer.name if self.info.peer else None,
            "medians": self.medians,
            "peer": self.peer,
            "runs": self.runs,
            "comparison": None if comparison is None else comparison.__dict__,
        }


def _label(run: BenchRun) -> str:
    rev = (run.git_rev or "")[:10]
    return (rev + ("+dirty" if run.dirty else "")) if rev else run.recorded_at[:19]


def _peer_seconds(run: BenchRun, kernel: KernelRun, info: KernelInfo) -> float | None:
    if info.peer is None:
        return None
    if info.peer.extra_info is not None:
        value = kernel.extra_info.get(info.peer.extra_info)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    for other in run.kernels:
        if info.peer.kernel and info.peer.kernel in other.kernel and other.kernel != kernel.kernel:
            return other.median
    return None


def kernel_series(runs: Sequence[BenchRun], config: KernelConfig) -> list[KernelSeries]:
    """One series per kernel (the reference kernel and peers measured as their own benchmarks included),
    on the machine of the kernel's latest run; CPU-bound kernels are normalised by the reference when every
    run of the series timed it."""
    latest_machine: dict[str, str] = {}
    for run in runs:
        for kernel in run.kernels:
            latest_machine[kernel.kernel] = run.machine
    series: dict[str, KernelSeries] = {}
    pending: dict[str, list[tuple[BenchRun, KernelRun, float | None]]] = {}
    for run in runs:
        reference = next((k.median for k in run.kernels if config.is_reference(k.kernel)), None)
        for kernel in run.kernels:
            if run.machine != latest_machine[kernel.kernel]:
                continue
            pending.setdefault(kernel.kernel, []).append((run, kernel, reference))
    for name, entries in pending.items():
        info = config.info(name)
        normalized = (
            info.cpu_bound
            and not config.is_reference(name)
            and all(reference for _, _, reference in entries)
        )
        item = KernelSeries(name, info, latest_machine[name], normalized)
        for run, kernel, reference in entries:
            centre = statistics.median(kernel.rounds)
            value = centre / reference if normalized and reference else centre
            item.points.append(Point(_label(run), kernel.rounds, value))
            item.medians.append(kernel.median)
            item.peer.append(_peer_seconds(run, kernel, info))
            item.runs.append({"label": _label(run), "git_rev": run.git_rev, "recorded_at": run.recorded_at})
        series[name] = item
    return [series[name] for name in sorted(series)]


def compare_all(
    runs: Sequence[BenchRun],
    config: KernelConfig,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
) -> list[tuple[KernelSeries, Comparison]]:
    """Every kernel's series with the comparison of its latest run against its own past."""
    out = []
    for item in kernel_series(runs, config):
        comparison = compare_series(
            item.kernel, item.points, threshold=threshold, alpha=alpha, normalized=item.normalized
        )
        if config.is_reference(item.kernel):
            comparison = dataclasses.replace(comparison, is_reference=True)
        out.append((item, comparison))
    return out
