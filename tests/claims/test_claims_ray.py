"""The Ray executor on a local Ray (2 CPUs): same verdicts as local processes, faults, timeouts, cancellation."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from labproject import SOURCE, build_lab, claim

from reprolab.claims.executor import Job
from reprolab.claims.project import find_project
from reprolab.claims.resolve import resolve_experiment
from reprolab.claims.session import ClaimSession

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():  # type: ignore[no-untyped-def]
    """One embedded Ray for the module (starting one costs seconds); executors reuse it and leave it up."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_recorded_claims_same_verdicts_under_ray(local_ray, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = find_project(ROOT)
    verdicts = {}
    for kind in ("local", "ray"):
        with ClaimSession(project, use_cache=False, executor=kind, report_dir=tmp_path) as session:
            claims = session.select([ROOT / "expectations" / "recorded"]).claims
            verdicts[kind] = {r.id: r.verdict for r in session.run(claims)}
    assert len(verdicts["ray"]) > 100
    assert verdicts["ray"] == verdicts["local"]


def test_a_worker_exit_on_one_seed_is_one_error_after_retry(local_ray, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = (
        SOURCE
        + claim("exits", "faults.exit_on_one", "x", "at_least: 0", "reproduced", "seeds: 3\n")
        + claim("hangs", "faults.hang", "x", "at_least: 0", "reproduced", "timeout_s: 3\n")
        + claim(
            "healthy", "calib.ece", "ece", "at_most: 0.05", "reproduced", "seeds: 3\nresources: {cpus: 1}\n"
        )
    )
    root = build_lab(tmp_path, text)
    with ClaimSession(find_project(root), executor="ray", retries=1) as session:
        results = {r.id: r for r in session.run(session.select().claims)}
    assert results["exits"].verdict == "error" and "seed 1" in results["exits"].message
    assert "ray task failed" in results["exits"].message
    assert results["hangs"].verdict == "error" and "timed out after 3 s" in results["hangs"].message
    assert results["healthy"].verdict == "reproduced" and results["healthy"].n_seeds == 3


def test_interrupting_a_run_cancels_outstanding_tasks(local_ray, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from reprolab.claims.ray_executor import RayExecutor

    root = build_lab(tmp_path)
    monkeypatch.syspath_prepend(str(root))
    quick = resolve_experiment("calib.ece", ["mylab.calib"])
    hang = resolve_experiment("faults.hang", ["mylab.faults"])
    jobs = [Job("q", quick, {}, 0), Job("h1", hang, {}, 0), Job("h2", hang, {}, 1)]

    def interrupt(job, outcome) -> None:  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    executor = RayExecutor()
    with pytest.raises(KeyboardInterrupt):
        executor.run(jobs, interrupt)
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2  # the hanging tasks were cancelled, their CPUs freed
    executor.close()
