"""Two runners sharing a cache compute each run once: the second waits for the first and reads the cache."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path

import pytest

from reprolab.claims.cache import ResultCache
from reprolab.claims.resolve import resolve_experiment
from reprolab.claims.runner import Task, run_tasks
from reprolab.claims.tasklock import TaskLocks

COUNTER = """
    import time


    def run(config, seed):
        with open(config["log"], "a") as f:
            f.write(f"{seed}\\n")
        time.sleep(config["sleep"])
        return {"value": float(seed) * 2}
"""


@pytest.fixture
def counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    (tmp_path / "counter.py").write_text(textwrap.dedent(COUNTER))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = resolve_experiment("counter:run")

    def tasks(config: dict) -> list[Task]:
        return [Task(spec.name, spec.version, config, s, f"k{s}-{config['sleep']}", spec) for s in (0, 1, 2)]

    return tasks


def test_two_runners_at_once_compute_each_run_once(counter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "runs.log"
    tasks = counter({"log": str(log), "sleep": 1.0})
    results: list[dict] = []

    def check() -> None:
        results.append(run_tasks(tasks, ResultCache(tmp_path / "cache"), workers=1))

    threads = [threading.Thread(target=check) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(log.read_text().split()) == ["0", "1", "2"]  # three runs, not six
    assert len(results) == 2
    for outcomes in results:
        assert {k: o.metrics for k, o in outcomes.items()} == {
            f"k{s}-1.0": {"value": 2.0 * s} for s in (0, 1, 2)
        }
    assert sum(o.cached for o in results[0].values()) + sum(o.cached for o in results[1].values()) == 3


def test_a_run_that_fails_elsewhere_is_computed_here(counter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = ResultCache(tmp_path / "cache")
    tasks = counter({"log": str(tmp_path / "runs.log"), "sleep": 0.0})
    other = TaskLocks(cache.root)
    # "another process" holds seed 0's lock, then gives up without a result
    assert other.try_acquire(tasks[0].key)
    threading.Timer(1.0, other.release_all).start()
    outcomes = run_tasks(tasks, cache, workers=1)
    assert outcomes[tasks[0].key].metrics == {"value": 0.0} and not outcomes[tasks[0].key].cached
    assert TaskLocks(cache.root).try_acquire(tasks[0].key)  # every lock released at the end


def test_disabled_cache_locks_nothing(counter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = ResultCache(tmp_path / "cache", enabled=False)
    tasks = counter({"log": str(tmp_path / "runs.log"), "sleep": 0.0})
    outcomes = run_tasks(tasks, cache, workers=1)
    assert all(o.metrics is not None for o in outcomes.values())
    assert not (tmp_path / "cache" / ".locks").exists()


def test_a_runner_arriving_late_shares_the_seeds_not_started_yet(counter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Locks are taken as tasks start, not all up front: a second runner that reaches a multi-seed run while the
    first is on its first seed computes some of the rest itself instead of waiting idle for all of them."""
    log = tmp_path / "runs.log"
    tasks = counter({"log": str(log), "sleep": 1.5})
    results: list[dict] = []

    def check() -> None:
        results.append(run_tasks(tasks, ResultCache(tmp_path / "cache"), workers=1))

    first = threading.Thread(target=check)
    first.start()
    deadline = threading.Event()
    while not log.exists() and not deadline.wait(0.05):  # the first runner has started its first seed
        pass
    second = threading.Thread(target=check)
    second.start()
    for t in (first, second):
        t.join(120)
    assert sorted(log.read_text().split()) == ["0", "1", "2"]  # each run once
    computed = [sum(not o.cached for o in r.values()) for r in results]
    assert sorted(computed) != [0, 3] and sum(computed) == 3, computed  # both runners computed seeds
