"""Runs are dispatched longest first, by what their config took before (any seed, any code version)."""

from __future__ import annotations

from pathlib import Path

from reprolab.claims.cache import ResultCache
from reprolab.claims.executor import TaskOutcome
from reprolab.claims.resolve import resolve_experiment
from reprolab.claims.runner import Task, longest_first, run_tasks


def _tasks(configs: list[dict]) -> list[Task]:
    spec = resolve_experiment("selftest.constant")
    return [Task(spec.name, spec.version, c, 0, f"new-{i}", spec) for i, c in enumerate(configs)]


class _Recorder:
    def __init__(self) -> None:
        self.order: list[str] = []

    def run(self, jobs, on_done) -> None:  # type: ignore[no-untyped-def]
        for job in jobs:
            self.order.append(job.key)
            on_done(job, TaskOutcome({"value": float(job.config["value"])}))

    def close(self) -> None:
        pass


def test_known_long_configs_go_first_and_new_ones_before_them(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    # entries of an older code version (other keys): only their durations matter
    cache.put("selftest.constant", "old-short", {"value": 1.0}, config={"value": 1}, seed=3, seconds=1.0)
    cache.put("selftest.constant", "old-long", {"value": 2.0}, config={"value": 2}, seed=0, seconds=50.0)
    cache.put("selftest.constant", "old-long-2", {"value": 2.0}, config={"value": 2}, seed=1, seconds=70.0)
    tasks = _tasks([{"value": 1}, {"value": 2}, {"value": 3}])
    assert [t.key for t in longest_first(tasks, cache)] == ["new-2", "new-1", "new-0"]
    recorder = _Recorder()
    outcomes = run_tasks(tasks, cache, executor=recorder)
    assert recorder.order == ["new-2", "new-1", "new-0"]
    assert {k: o.metrics for k, o in outcomes.items()} == {f"new-{i}": {"value": i + 1.0} for i in range(3)}


def test_without_history_the_given_order_is_kept(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    (tmp_path / "cache" / "selftest.constant" / "ab").mkdir(parents=True)
    (tmp_path / "cache" / "selftest.constant" / "ab" / "junk.json").write_text("{not json")
    tasks = _tasks([{"value": 5}, {"value": 4}, {"value": 6}])
    assert longest_first(tasks, cache) == tasks
    assert longest_first(tasks, ResultCache(tmp_path / "off", enabled=False)) == tasks
