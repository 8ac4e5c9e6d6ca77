"""Engine overhead: per-claim cost excluding the experiment, and collection of 1,000 claims.

Targets (issue 10): at most 10 ms per claim served from the cache; loading 1,000 claims (schema, experiment
resolution, config keys, citations) under 0.5 s. Collecting 1,000 claim items through pytest is tracked too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reprolab.claims.cache import ResultCache
from reprolab.claims.loader import load_claims
from reprolab.claims.runner import run_claims

CLAIM = """\
  - id: bench-{i}
    quote: "q"
    statement: s
    scale: fast
    experiment: selftest.noisy
    config: {{loc: {loc}}}
    seeds: 10
    expect: {{metric: value, statistic: iqm, at_least: -100, interval: ci95, why: bench}}
    verdict: reproduced
"""
HEADER = 'source: {document: 000_0cacfeb2bd6edaa0.txt, title: "t"}\nclaims:\n'


def _write(root: Path, n_files: int, per_file: int) -> Path:
    """A configured project (pyproject.toml, the cited note) with ``n_files * per_file`` claims."""
    (root / "pyproject.toml").write_text('[tool.reprolab]\nclaims = ["expectations"]\nnotes = "notes"\n')
    (root / "notes").mkdir()
    (root / "notes" / "000_0cacfeb2bd6edaa0.txt").write_text("t\n\nq\n")
    directory = root / "expectations"
    directory.mkdir()
    for f in range(n_files):
        body = "".join(CLAIM.format(i=f * per_file + i, loc=(f * per_file + i) % 7) for i in range(per_file))
        (directory / f"claims_{f}.yaml").write_text(HEADER + body)
    return directory


@pytest.mark.benchmark
def test_bench_load_1000_claims(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    directory = _write(tmp_path, n_files=50, per_file=20)
    claims, errors = benchmark(load_claims, [directory], notes=tmp_path / "notes")
    assert len(claims) == 1000 and not errors


@pytest.mark.benchmark
def test_bench_engine_overhead_per_claim_cached(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """100 claims x 10 seeds, served from a warm cache: everything but the experiment itself."""
    claims, _ = load_claims([_write(tmp_path, n_files=5, per_file=20)])
    cache = ResultCache(tmp_path / "cache")
    run_claims(claims, cache)  # warm the cache
    results = benchmark(run_claims, claims, cache)
    assert all(r.matches for r in results)
    benchmark.extra_info["per_claim_ms"] = benchmark.stats.stats.mean / len(claims) * 1e3


@pytest.mark.benchmark
def test_bench_pytest_collection_1000_items(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    directory = _write(tmp_path, n_files=50, per_file=20)

    def collect() -> int:
        import subprocess
        import sys

        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
                str(directory),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        )
        return out.stdout.count("::bench-")

    assert benchmark.pedantic(collect, rounds=3, iterations=1) == 1000
