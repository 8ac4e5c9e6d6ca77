"""Workers compute on one thread each (the executor's parallelism is its workers), unless the caller said otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reprolab.claims.executor import IsolatedExecutor, Job
from reprolab.claims.numerics import THREAD_VARIABLES
from reprolab.claims.resolve import resolve_experiment

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
    import os


    def probe(config, seed):
        out = {name: float(os.environ.get(name, "0")) for name in config["names"]}
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            return out
        import numpy  # noqa: F401  (loads its BLAS, whose thread pool is then read)

        pools = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        out["blas_threads"] = float(max(pools)) if pools else 0.0
        return out
"""

# The reprolab CLI imports numpy, and a spawned worker imports the parent's main module before any code of
# the executor runs: the limit must already be in the worker's environment when it starts.
MAIN = """
    import json
    import sys

    import numpy  # noqa: F401

    from reprolab.claims.executor import IsolatedExecutor, Job
    from reprolab.claims.resolve import resolve_experiment

    if __name__ == "__main__":
        spec = resolve_experiment("threadprobe:probe")
        out = []
        with IsolatedExecutor(2) as ex:
            ex.run([Job(str(s), spec, {"names": sys.argv[1:]}, s) for s in (0, 1)], lambda j, o: out.append(o.metrics))
        print(json.dumps(out))
"""


@pytest.fixture
def probe_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "threadprobe.py").write_text(textwrap.dedent(PROBE))
    (tmp_path / "main.py").write_text(textwrap.dedent(MAIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _run_main(probe_dir: Path, env_extra: dict[str, str]) -> list[dict[str, float]]:
    import json

    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(env_extra, PYTHONPATH=os.pathsep.join([str(probe_dir), str(ROOT)]))
    done = subprocess.run(
        [sys.executable, str(probe_dir / "main.py"), *THREAD_VARIABLES],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_workers_are_single_threaded_even_under_a_main_that_imports_numpy(probe_dir: Path) -> None:
    for metrics in _run_main(probe_dir, {}):
        assert all(metrics[name] == 1.0 for name in THREAD_VARIABLES), metrics
        if "blas_threads" in metrics:
            assert metrics["blas_threads"] == 1.0, metrics


def test_the_callers_thread_setting_wins(probe_dir: Path) -> None:
    for metrics in _run_main(probe_dir, {"OPENBLAS_NUM_THREADS": "2"}):
        assert metrics["OPENBLAS_NUM_THREADS"] == 2.0 and metrics["OMP_NUM_THREADS"] == 1.0, metrics


def test_the_parents_environment_is_left_as_it_was(probe_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    spec = resolve_experiment("threadprobe:probe")
    out: list[dict[str, float] | None] = []
    with IsolatedExecutor(1) as ex:
        ex.run([Job("a", spec, {"names": list(THREAD_VARIABLES)}, 0)], lambda j, o: out.append(o.metrics))
    assert out[0] is not None and out[0]["MKL_NUM_THREADS"] == 1.0
    assert not any(name in os.environ for name in THREAD_VARIABLES)
