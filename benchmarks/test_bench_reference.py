"""The reference kernel: a fixed, project-independent CPU workload timed in every benchmark run.

``reprolab bench compare`` divides each CPU-bound kernel's median by this kernel's median from the same run, so a
busy or slower machine (which slows both) does not read as a regression. It must stay unchanged: editing it
shifts every ratio. Single-threaded on purpose (``np.sort``), like the share of a CPU a noisy neighbour takes.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.benchmark


def test_bench_reference_kernel(benchmark) -> None:  # type: ignore[no-untyped-def]
    values = np.random.default_rng(0).standard_normal(1_000_000)
    ordered = benchmark.pedantic(np.sort, args=(values,), rounds=7, warmup_rounds=1)
    assert ordered[0] <= ordered[-1]
