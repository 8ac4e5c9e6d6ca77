"""reprolab.startup: heavy imports run with the cyclic collector paused, and what they create is frozen."""

from __future__ import annotations

import gc

import pytest

from reprolab.startup import paused_collector


@pytest.mark.parametrize("enabled", [True, False])
def test_collector_paused_inside_and_restored_after(enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        frozen_before = gc.get_freeze_count()
        with paused_collector():
            assert not gc.isenabled()
            made = [[i] for i in range(1000)]  # tracked containers created during the "import"
        assert gc.isenabled() is enabled
        assert gc.get_freeze_count() >= frozen_before + len(made)  # they went to the permanent generation
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()


def test_collector_restored_when_the_import_fails():
    with pytest.raises(ModuleNotFoundError), paused_collector():
        import reprolab_no_such_module  # noqa: F401
    assert gc.isenabled()
    gc.unfreeze()


def test_a_worker_freezes_only_at_the_first_import_of_an_experiment_module():
    # freezing on every task would also freeze cyclic garbage an earlier task left, never to be freed
    import reprolab.experiments.selftest  # noqa: F401  (already imported: this task's import is not the first)
    from reprolab.claims.executor import execute
    from reprolab.claims.resolve import resolve_experiment

    spec = resolve_experiment("selftest.constant")
    garbage = [[] for _ in range(100)]
    for item in garbage:
        item.append(item)  # cycles, unreachable once `garbage` is dropped
    del garbage
    before = gc.get_freeze_count()
    outcome = execute(spec, {"value": 1.0}, 0)
    assert outcome.metrics == {"value": 1.0}
    assert gc.get_freeze_count() == before
