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
    # a force-cancelled task's CPU returns when Ray has reaped its worker: seconds, but over 30 s on a loaded
    # CI machine running the rest of the fast tier beside it (seen once); a leak never returns it
    deadline = time.time() + 120
    while ray.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2  # the hanging tasks were cancelled, their CPUs freed
    executor.close()


PROBE = '''
import ray

from reprolab import experiment


@experiment("probe.assigned", metrics={"memory_gb": (0.0, None)}, config_keys=("arm",))
def assigned(config, seed):
    return {"memory_gb": ray.get_runtime_context().get_assigned_resources().get("memory", 0.0) / 2**30}
'''


def test_planned_memory_is_the_default_request_and_yaml_wins(local_ray, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from reprolab.claims.ray_executor import PLAN_FILE, RayExecutor, planned_requests
    from reprolab.rehearse.plan import Estimate, save_plan

    text = (
        SOURCE
        + claim("planned", "probe.assigned", "memory_gb", "at_least: 0", "reproduced", "config: {arm: 1}\n")
        + claim("declared", "probe.assigned", "memory_gb", "at_least: 0", "reproduced",
                "config: {arm: 2}\nresources: {cpus: 1, memory_gb: 0.25}\n")
    )  # fmt: skip
    root = build_lab(tmp_path, text)
    # a top-level module, not mylab.probe: the module's Ray workers may already hold another test's `mylab`
    (root / "rayplanprobe.py").write_text(PROBE)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"mylab.broken"]', '"mylab.broken", "rayplanprobe"]'))
    project = find_project(root)
    plan = project.state / PLAN_FILE
    estimate = lambda claim_id, arm, gb, cuda: Estimate(  # noqa: E731
        claim_id, "probe.assigned", [{"arm": arm}], "1s", 1.0, 0.1, gb * 2**30, cuda
    )
    save_plan(plan, [estimate("planned", 1, 0.5, False), estimate("declared", 2, 0.75, False)], tmp_path / "m.json")
    with ClaimSession(project, use_cache=False, executor="ray") as session:
        results = {r.id: r for r in session.run(session.select().claims)}
    assert results["planned"].verdict == "reproduced", results["planned"].message
    assigned = {name: [v for vs in r.values.values() for v in vs] for name, r in results.items()}  # one arm each
    assert assigned["planned"] == pytest.approx([0.5], abs=0.01)  # the plan's memory
    assert assigned["declared"] == pytest.approx([0.25], abs=0.01)  # the YAML's, not the plan's

    save_plan(plan, [estimate("planned", 1, 3.0, True)], tmp_path / "m.json")  # measured on CUDA: one GPU
    executor = RayExecutor(plan=plan)
    monkeypatch.syspath_prepend(str(root))
    spec = resolve_experiment("probe.assigned", ["rayplanprobe"])
    assert executor.resources_of(Job("k", spec, {"arm": 1}, 0)) == {"memory_gb": 3.0, "gpus": 1.0}
    assert executor.resources_of(Job("k", spec, {"arm": 9}, 0)) is None  # not planned: Ray's defaults
    assert executor.resources_of(Job("k", spec, {"arm": 1}, 0, resources={"cpus": 2})) == {"cpus": 2}
    plan.write_text("{not json")
    with pytest.raises(ValueError, match="not a plan written by `reprolab plan --write`"):
        planned_requests(plan)
