"""Large tensors merged in row blocks (reprolab/mergers/weights/blocked.py) give the very bytes of the whole-tensor
path, for every row-blocked method and trim setting, including entries tied at the trim threshold that
straddle the cut across block boundaries; where they could not (tie_break: mergekit with straddling ties, a
missed sample bracket) the whole-tensor path is taken. Non-finite values and a base equal to a source are still
caught, naming the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprolab.mergers.weights import blocked, save_state_dict
from reprolab.mergers.weights.engine import MergePlan, merge_checkpoints
from reprolab.mergers.weights.registry import Workspace
from reprolab.mergers.weights.sparsify import CutFinder, apply_cut, magnitude_mask
from reprolab.mergers.weights.task_vectors import BaseIsSourceError

SHAPES = {"embed.weight": (300, 64), "layer.weight": (64, 64), "layer.bias": (64,)}


def _models(root, tied: bool = False):
    g = torch.Generator().manual_seed(1)
    base = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}
    base["ids"] = torch.arange(5)
    paths = []
    for i, name in enumerate(("base", "ft0", "ft1", "ft2")):
        if i == 0:
            sd = base
        elif tied:  # task vectors on a coarse grid: many entries tied at every threshold
            sd = {
                k: v + (torch.randint(-3, 4, v.shape, generator=g) * 0.25 if v.is_floating_point() else 0)
                for k, v in base.items()
            }
        else:
            sd = {
                k: v + (0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else 0)
                for k, v in base.items()
            }
        save_state_dict(sd, root / name)
        paths.append(root / name)
    return paths[0], paths[1:]


@pytest.fixture
def small_blocks(monkeypatch):
    """Every tensor above 4 KiB is row-blocked, in blocks of 10 rows of 64: 30 blocks for the embedding."""
    monkeypatch.setattr(blocked, "LARGE_BYTES", 4096)
    monkeypatch.setattr(blocked, "BLOCK_ENTRIES", 640)
    taken = []
    real = blocked.merge_rows

    def spy(*a, **k):
        taken.append(a[2])
        return real(*a, **k)

    monkeypatch.setattr(blocked, "merge_rows", spy)
    return taken


def _merge(base, sources, out, method, params=None, per=None, large=None, monkeypatch=None):
    plan = MergePlan.build(method, len(sources), params=params, per_source_params=per)
    if large is not None:
        monkeypatch.setattr(blocked, "LARGE_BYTES", large)
    merge_checkpoints(base, sources, out, plan, copy_files=False)
    return (out / "model.safetensors").read_bytes()


CASES = {
    "ties": ("ties", {"density": 0.3}, None),
    "ties per-source density": ("ties", None, [{"density": 0.2}, {"density": 0.5}, {"density": 1.0}]),
    "ties weighted, lambda": (
        "ties",
        {"density": 0.4, "lambda": 0.7},
        [{"weight": 0.5}, {"weight": 2.0}, {"weight": 1.0}],
    ),
    "ties count consensus": ("ties", {"density": 0.3, "consensus": "count", "normalize": False}, None),
    "ties model scope": ("ties", {"density": 0.3, "trim_scope": "model"}, None),
    "task_arithmetic": (
        "task_arithmetic",
        {"lambda": 0.7},
        [{"weight": 0.3}, {"weight": 0.5}, {"weight": 1.2}],
    ),
    "linear": ("linear", None, [{"weight": 0.3}, {"weight": 0.5}, {"weight": 1.2}]),
}


@pytest.mark.parametrize("tied", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("case", list(CASES))
def test_row_blocks_are_bit_identical_to_the_whole_tensor(tmp_path, small_blocks, monkeypatch, case, tied):
    base, sources = _models(tmp_path, tied)
    method, params, per = CASES[case]
    got = _merge(base, sources, tmp_path / "blocked", method, params, per)
    assert set(small_blocks) == {"embed.weight", "layer.weight"}, "the row-blocked path was not taken"
    small_blocks.clear()
    want = _merge(
        base, sources, tmp_path / "whole", method, params, per, large=1 << 62, monkeypatch=monkeypatch
    )
    assert not small_blocks
    assert got == want


def test_tie_break_mergekit_with_straddling_ties_takes_the_whole_tensor(tmp_path, small_blocks, monkeypatch):
    base, sources = _models(tmp_path, tied=True)
    params = {"density": 0.3, "tie_break": "mergekit"}
    got = _merge(base, sources, tmp_path / "blocked", "ties", params)
    assert (
        small_blocks == []
    )  # ties straddle the cut in both large tensors: argsort order needs the whole tensor
    want = _merge(base, sources, tmp_path / "whole", "ties", params, large=1 << 62, monkeypatch=monkeypatch)
    assert got == want


def test_a_missed_sample_bracket_takes_the_whole_tensor(tmp_path, small_blocks, monkeypatch):
    class Missing(CutFinder):
        def finish(self):
            return None

    base, sources = _models(tmp_path)
    want = _merge(
        base, sources, tmp_path / "whole", "ties", {"density": 0.3}, large=1 << 62, monkeypatch=monkeypatch
    )
    monkeypatch.setattr(blocked, "LARGE_BYTES", 4096)
    monkeypatch.setattr(blocked, "CutFinder", Missing)
    assert _merge(base, sources, tmp_path / "blocked", "ties", {"density": 0.3}) == want
    assert small_blocks == []


def test_cut_applied_block_by_block_keeps_the_whole_tensor_mask():
    g = torch.Generator().manual_seed(3)
    t = (torch.randint(-4, 5, (5000,), generator=g) * 0.5).to(torch.float32)
    ws = Workspace()
    for density in (0.05, 0.3, 0.77):
        want = magnitude_mask(t, density, Workspace()).numpy().copy()
        k = max(1, int(density * t.numel()))
        finder = CutFinder(np.abs(t.numpy()[::3]), t.numel(), k, ws)
        for s in range(0, t.numel(), 701):
            finder.add(np.abs(t.numpy()[s : s + 701]))
        cut = finder.finish()
        assert cut is not None and cut.ties is not None  # ties straddle the cut
        got = t.numpy().copy()
        for s in range(0, got.size, 333):
            apply_cut(got[s : s + 333], cut, ws)
        assert np.array_equal(got != 0, want & (t.numpy() != 0)) and int(np.count_nonzero(want)) == k


def test_non_finite_values_in_a_row_block_name_the_model(tmp_path, small_blocks):
    base, sources = _models(tmp_path)
    from reprolab.mergers.weights import load_state_dict

    bad = load_state_dict(sources[1])
    bad["embed.weight"][250, 3] = float("inf")
    save_state_dict(bad, sources[1])
    with pytest.raises(ValueError, match=rf"tensor 'embed.weight' in {sources[1]} has non-finite values"):
        _merge(base, sources, tmp_path / "out", "ties", {"density": 0.3})
    assert not any((tmp_path / "out").iterdir())


def test_a_base_equal_to_a_source_is_still_caught(tmp_path, small_blocks):
    base, sources = _models(tmp_path)
    with pytest.raises(BaseIsSourceError, match="identical to source"):
        _merge(base, [sources[0], base], tmp_path / "out", "ties", {"density": 0.3})


@pytest.fixture
def held_blocks(monkeypatch):
    """Every trimmed tensor is merged from row blocks held in memory (none read twice), in blocks of 10 rows."""
    monkeypatch.setattr(blocked, "LARGE_BYTES", 1 << 62)
    monkeypatch.setattr(blocked, "HOLD_MIN_BYTES", 0)
    monkeypatch.setattr(blocked, "BLOCK_ENTRIES", 640)
    taken = []
    real = blocked.merge_rows

    def spy(*a, **k):
        taken.append((a[2], a[11] if len(a) > 11 else k.get("held")))
        return real(*a, **k)

    monkeypatch.setattr(blocked, "merge_rows", spy)
    return taken


@pytest.mark.parametrize("tied", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][0] == "ties"])
def test_held_row_blocks_are_bit_identical_to_the_whole_tensor(tmp_path, held_blocks, monkeypatch, case, tied):
    base, sources = _models(tmp_path, tied)
    method, params, per = CASES[case]
    got = _merge(base, sources, tmp_path / "held", method, params, per)
    trimmed = {"embed.weight", "layer.weight", "layer.bias"} if (params or {}).get("trim_scope") != "model" else set()
    assert {n for n, held in held_blocks if held is not None} == trimmed
    monkeypatch.setattr(blocked, "HOLD_MIN_BYTES", 1 << 62)
    held_blocks.clear()
    want = _merge(base, sources, tmp_path / "whole", method, params, per)
    assert not held_blocks
    assert got == want


def test_held_blocks_still_name_a_non_finite_source_and_catch_a_base_equal_to_a_source(tmp_path, held_blocks):
    base, sources = _models(tmp_path)
    from reprolab.mergers.weights import load_state_dict

    with pytest.raises(BaseIsSourceError, match="identical to source"):
        _merge(base, [sources[0], base], tmp_path / "same", "ties", {"density": 0.3})
    bad = load_state_dict(sources[2])
    bad["layer.weight"][7, 3] = float("nan")
    save_state_dict(bad, sources[2])
    with pytest.raises(ValueError, match=rf"tensor 'layer.weight' in {sources[2]} has non-finite values"):
        _merge(base, sources, tmp_path / "out", "ties", {"density": 0.3})


def test_large_tensors_falling_back_to_whole_are_merged_one_at_a_time(tmp_path, small_blocks, monkeypatch):
    """tie_break: mergekit with straddling ties: the row blocks fall through; on two threads such tensors are
    merged whole one at a time (never two whole working sets at once), with the one-thread result."""
    from reprolab.mergers.weights import engine

    base, sources = _models(tmp_path, tied=True)
    plan = MergePlan.build("ties", len(sources), params={"density": 0.3, "tie_break": "mergekit"})
    active, peak = [0], [0]
    real = engine.TensorMerger.merge

    def merge(self, name, ws, identical, *, whole_large=True):
        out = real(self, name, ws, identical, whole_large=whole_large)
        if whole_large and self.base.info(name).nbytes > blocked.LARGE_BYTES:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            import time

            time.sleep(0.05)
            active[0] -= 1
        return out

    monkeypatch.setattr(engine.TensorMerger, "merge", merge)
    merge_checkpoints(base, sources, tmp_path / "two", plan, copy_files=False, threads=2)
    merge_checkpoints(base, sources, tmp_path / "one", plan, copy_files=False, threads=1)
    assert peak[0] == 1
    assert (tmp_path / "two" / "model.safetensors").read_bytes() == (tmp_path / "one" / "model.safetensors").read_bytes()
