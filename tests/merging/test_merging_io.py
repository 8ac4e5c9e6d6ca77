"""Streaming safetensors I/O, the engine's bad-input errors, and the base-is-a-source guard."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from reprolab.mergers.weights import (
    BaseIsSourceError,
    Checkpoint,
    MergePlan,
    load_state_dict,
    merge_checkpoints,
    merge_state_dicts,
    save_state_dict,
)


def _sd(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {"emb.weight": torch.randn(10, 4, generator=g).to(dtype), "lin.weight": torch.randn(3, 4, generator=g).to(dtype),
            "lin.bias": torch.randn(3, generator=g).to(dtype), "pos_ids": torch.arange(5)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_roundtrip_matches_the_reference_library(tmp_path, dtype):
    sd = _sd(0, dtype)
    save_state_dict(sd, tmp_path / "m")
    ref = load_file(tmp_path / "m" / "model.safetensors")  # the official reader accepts our files
    ours = load_state_dict(tmp_path / "m")
    for k, v in sd.items():
        assert torch.equal(ref[k], v) and torch.equal(ours[k], v)
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "ref.safetensors")
    assert all(torch.equal(load_state_dict(tmp_path / "ref.safetensors")[k], v) for k, v in sd.items())


def test_sharded_folder_roundtrip(tmp_path):
    sd = _sd()
    files = save_state_dict(sd, tmp_path / "m", max_shard_bytes=100)
    assert len(files) > 1
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(sd)
    out = load_state_dict(tmp_path / "m")
    assert all(torch.equal(out[k], v) for k, v in sd.items())


def test_streaming_merge_equals_in_memory_and_writes_out_dtype(tmp_path):
    base, a, b = _sd(0), _sd(1), _sd(2)
    for name, sd in (("base", base), ("a", a), ("b", b)):
        save_state_dict(sd, tmp_path / name, max_shard_bytes=120)
    (tmp_path / "base" / "config.json").write_text("{}")
    plan = MergePlan.build("ties", 2, [0.6, 0.4], {"density": 0.5})
    merge_checkpoints(tmp_path / "base", [tmp_path / "a", tmp_path / "b"], tmp_path / "out", plan, out_dtype=torch.float16)
    got = load_state_dict(tmp_path / "out")
    want = merge_state_dicts(base, [a, b], "ties", [0.6, 0.4], params={"density": 0.5}, out_dtype=torch.float16)
    assert (tmp_path / "out" / "config.json").is_file()
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k])
    assert got["pos_ids"].dtype == torch.int64


def test_pickled_checkpoint_refused_or_weights_only(tmp_path):
    torch.save(_sd(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickled checkpoints are refused"):
        Checkpoint(tmp_path)
    ck = Checkpoint(tmp_path, allow_pickle=True)
    assert torch.equal(ck.get("lin.bias"), _sd()["lin.bias"])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights_only"):
        Checkpoint(tmp_path / "evil.pt", allow_pickle=True)


def test_corrupt_and_missing_files_named(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{nope")
    with pytest.raises(ValueError, match=r"bad\.safetensors"):
        Checkpoint(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        Checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no safetensors weights"):
        Checkpoint(tmp_path / "empty")


def test_missing_and_extra_tensors_named():
    base = _sd(0)
    missing = {k: v for k, v in _sd(1).items() if k != "lin.bias"}
    with pytest.raises(ValueError, match=r"missing tensor\(s\) \['lin.bias'\]"):
        merge_state_dicts(base, [missing], "ties")
    extra = {**_sd(1), "head.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"'head.weight'"):
        merge_state_dicts(base, [extra], "ties")


def test_shape_mismatch_names_the_tensor():
    other = _sd(1)
    other["emb.weight"] = torch.zeros(11, 4)
    with pytest.raises(ValueError, match=r"tensor 'emb.weight': shape \(11, 4\)"):
        merge_state_dicts(_sd(0), [other], "task_arithmetic")


def test_mixed_dtypes_need_an_explicit_dtype(tmp_path):
    save_state_dict(_sd(0), tmp_path / "base")
    save_state_dict(_sd(1, torch.float16), tmp_path / "a")
    plan = MergePlan.build("linear", 1)
    with pytest.raises(ValueError, match="mixed dtypes"):
        merge_checkpoints(tmp_path / "base", [tmp_path / "a"], tmp_path / "out", plan)
    merge_checkpoints(tmp_path / "base", [tmp_path / "a"], tmp_path / "out2", plan, compute_dtype=torch.float32)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_non_finite_weights_named():
    bad = _sd(1)
    bad["lin.weight"][0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"tensor 'lin.weight' in source\[0\] has non-finite"):
        merge_state_dicts(_sd(0), [bad], "ties")


def test_empty_source_list():
    with pytest.raises(ValueError, match="source list is empty"):
        merge_state_dicts(_sd(0), [], "ties")


def test_base_equal_to_a_source_is_refused_unless_explicit():
    base, a = _sd(0), _sd(1)
    with pytest.raises(BaseIsSourceError, match="pretrained"):
        merge_state_dicts(a, [a, base], "ties")
    out = merge_state_dicts(a, [a, base], "ties", allow_source_as_base=True)
    assert set(out) == set(base)


def test_non_float_tensor_disagreement_is_an_error():
    other = _sd(1)
    other["pos_ids"] = torch.arange(5) + 1
    with pytest.raises(ValueError, match="non-float tensor 'pos_ids'"):
        merge_state_dicts(_sd(0), [other], "linear")


@pytest.mark.parametrize("name", ["torch.float16", "torch.bfloat16", "Torch.Float32"])
def test_dtype_names_with_a_torch_prefix_are_read_as_mergekit_reads_them(name):
    # mergekit 0.1.5's dtype_from_name strips a leading "torch." (`dtype: torch.float16` runs there)
    from reprolab.mergers.weights.io import dtype_from_name

    assert dtype_from_name(name) == getattr(torch, name.lower().removeprefix("torch."))
