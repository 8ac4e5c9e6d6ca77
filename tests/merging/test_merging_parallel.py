"""The threaded on-disk merge: same bytes at any thread count, errors as a sequential run reports them, and the
writer that puts tensors at their planned byte ranges in any order."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from reprolab.mergers.weights import (
    MergePlan,
    StreamingWriter,
    load_state_dict,
    merge_checkpoints,
    save_state_dict,
)
from reprolab.mergers.weights.parallel import THREADS_VARIABLE, map_tensors, merge_threads


def _model(seed: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}


SHAPES = {f"layers.{i}.{p}": (64 + 8 * i, 48) for i in range(6) for p in ("q", "mlp")} | {"norm": (48,)}


@pytest.fixture
def folders(tmp_path):
    base = _model(0, SHAPES)
    save_state_dict(base, tmp_path / "base", max_shard_bytes=60_000)  # several shards: tensors spread over files
    (tmp_path / "base" / "config.json").write_text('{"torch_dtype": "float32"}')
    for i in range(3):
        save_state_dict({k: v + 0.01 * torch.randn_like(v) for k, v in base.items()}, tmp_path / f"ft{i}")
    return tmp_path


@pytest.mark.parametrize("method,params", [("ties", {"density": 0.3}), ("dare_ties", {"density": 0.5}),
                                           ("task_arithmetic", {})])
def test_output_bytes_do_not_depend_on_the_thread_count(folders, method, params):
    plan = MergePlan.build(method, 3, [1.0, 0.7, 0.4], params, seed=3)
    srcs = [folders / f"ft{i}" for i in range(3)]
    files = {}
    for threads in (1, 2, 4):
        out = folders / f"out{threads}"
        written = merge_checkpoints(folders / "base", srcs, out, plan, threads=threads, max_shard_bytes=60_000)
        assert len(written) > 1
        files[threads] = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if not p.name.startswith(".")}
    assert files[1] == files[2] == files[4]
    assert set(load_state_dict(folders / "out2")) == set(SHAPES)


def test_the_error_reported_is_the_first_in_dispatch_order():
    names = [f"t{i}" for i in range(40)]
    started = []

    def work(name, ws):
        started.append(name)
        if name in ("t7", "t8", "t30"):
            raise ValueError(f"bad {name}")
        return name

    for threads in (1, 2, 3):
        started.clear()
        with pytest.raises(ValueError, match="bad t7"):
            map_tensors(names, work, threads)
        assert "t30" not in started  # nothing more is started once a tensor has failed


def test_results_come_back_in_order_with_progress_on_the_calling_thread():
    caller = threading.get_ident()
    seen = []
    out = map_tensors([f"t{i}" for i in range(25)], lambda n, ws: n.upper(), 2,
                      lambda count, name: seen.append((count, threading.get_ident())))
    assert out == [f"T{i}" for i in range(25)]
    assert [c for c, _ in seen] == list(range(1, 26)) and {t for _, t in seen} == {caller}


def test_an_interrupt_in_progress_stops_the_threads_and_propagates():
    started = []

    def stop(count, name):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        map_tensors([f"t{i}" for i in range(200)], lambda n, ws: (started.append(n), time.sleep(0.005)), 2, stop)
    assert len(started) < 200
    assert not [t for t in threading.enumerate() if t.name.startswith("reprolab-merge-")]


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_a_bad_thread_setting_is_one_clear_error(monkeypatch, raw):
    monkeypatch.setenv(THREADS_VARIABLE, raw)
    with pytest.raises(ValueError, match=f"{THREADS_VARIABLE}="):
        merge_threads()


def test_thread_setting_defaults_to_torchs_capped(monkeypatch):
    monkeypatch.delenv(THREADS_VARIABLE, raising=False)
    assert 1 <= merge_threads() <= 4
    monkeypatch.setenv(THREADS_VARIABLE, "3")
    assert merge_threads() == 3


def test_writer_places_tensors_in_any_order_and_refuses_repeats_and_gaps(tmp_path):
    sd = _model(1, SHAPES)
    plan = {k: (v.dtype, tuple(v.shape)) for k, v in sd.items()}
    with StreamingWriter(tmp_path / "m", plan, max_shard_bytes=50_000) as w:
        for k in reversed(list(sd)):
            w.write_at(k, iter(sd[k].reshape(-1).split(100)))
        with pytest.raises(ValueError, match="written twice"):
            w.write_at("norm", (sd["norm"],))
    got = load_state_dict(tmp_path / "m")
    assert all(torch.equal(got[k], v) for k, v in sd.items())
    w = StreamingWriter(tmp_path / "gap", plan)
    w.write_at("norm", (sd["norm"],))
    with pytest.raises(ValueError, match="not written"):
        w.close()
    with pytest.raises(ValueError, match="not in the plan"):
        StreamingWriter(tmp_path / "x", plan).write_at("nope", ())


def test_tensors_merged_whole_above_the_row_block_size_are_merged_alone(folders, monkeypatch):
    from reprolab.mergers.weights import blocked, engine

    calls = []
    real = engine.map_tensors
    monkeypatch.setattr(engine, "map_tensors", lambda names, work, threads, on_done=None: (
        calls.append((list(names), threads)), real(names, work, threads, on_done))[1])
    monkeypatch.setattr(blocked, "LARGE_BYTES", 20_000)  # the layers' matrices (> 20 kB) count as large
    srcs = [folders / f"ft{i}" for i in range(3)]
    big = sorted(k for k, s in SHAPES.items() if 4 * s[0] * (s[1] if len(s) > 1 else 1) > 20_000)
    plan = MergePlan.build("breadcrumbs", 3, params={"density": 0.8, "gamma": 0.05})  # merged whole: no row blocks
    merge_checkpoints(folders / "base", srcs, folders / "bc", plan, threads=2)
    (alone, one), (shared, two) = calls
    assert one == 1 and two == 2 and sorted(alone) == big and set(shared) == set(SHAPES) - set(big)
    calls.clear()
    merge_checkpoints(folders / "base", srcs, folders / "ties", MergePlan.build("ties", 3, params={"density": 0.3}),
                      threads=2)
    assert calls[0] == ([], 1) and len(calls[1][0]) == len(SHAPES)  # row blocks bound every TIES tensor
