"""mergekit configs give mergekit's results (issue 14): mergekit's documented example configs, rewritten onto
small generated Llama-shaped bfloat16 models, through ``reprolab merge``, against mergekit 0.1.5's outputs
recorded by benchmarks/merging/record_mergekit_reference.py (mergekit itself is not a test dependency)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from reprolab.mergers.weights import load_state_dict
from reprolab.mergers.weights.run import run_merge
from tests.merging.mergekit_cases import CONFIGS, DARE_CONFIGS, REFERENCE, build_models, write_config


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("mk"))


def _merge(root, name, out_name, **overrides):
    cfg = yaml.safe_load(write_config(root, name).read_text())
    params = {**(cfg.get("parameters") or {}), **overrides.pop("parameters", {})}
    if params:
        cfg["parameters"] = params
    cfg.update(overrides)
    path = root / f"{out_name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_merge(path, root / out_name, show_progress=False, overwrite=True)
    return load_state_dict(root / out_name)


def _differing(got, want) -> tuple[int, int]:
    assert set(got) == set(want)
    n = sum(int((got[k] != want[k]).sum()) for k in want)
    return n, sum(v.numel() for v in want.values())


def test_reference_was_recorded_with_mergekit_0_1_5():
    assert json.loads((REFERENCE / "recorded_with.json").read_text())["mergekit"] == "0.1.5"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_mergekit_configs_give_mergekits_output(stand_ins, name):
    want = load_file(REFERENCE / f"{name}.safetensors")
    exact = {"parameters": {"tie_break": "mergekit"}} if name.startswith("ties") else {}
    got = _merge(stand_ins, name, f"{name}_exact", **exact)
    assert all(got[k].dtype == want[k].dtype for k in want)
    assert _differing(got, want)[0] == 0, "tie_break: mergekit must be bit-identical to mergekit"
    if name.startswith("ties"):  # the default tie break differs only where entries tie at the trim threshold
        got = _merge(stand_ins, name, f"{name}_index")
        tied = _tied_at_threshold(stand_ins, name)
        for k in want:
            differs = got[k] != want[k]
            assert not (differs & ~tied[k]).any(), f"{k}: differs from mergekit away from threshold ties"


def _tied_at_threshold(root, name) -> dict[str, torch.Tensor]:
    """Per tensor, the entries where some source's |delta| equals its top-k threshold (mergekit's rule:
    k = max(1, int(density * numel)) largest of |x_i - base| in the merge dtype)."""
    cfg = yaml.safe_load(write_config(root, name).read_text())
    dt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(cfg.get("dtype"))
    base = load_state_dict(root / "base")
    out = {k: torch.zeros(v.shape, dtype=torch.bool) for k, v in base.items()}
    for m in cfg["models"]:
        if m["model"].endswith("/base"):
            continue
        src, density = load_state_dict(m["model"]), m["parameters"]["density"]
        for k, b in base.items():
            work = dt or b.dtype
            delta = (src[k].to(work) - b.to(work)).abs().float()
            kth = max(1, int(density * delta.numel()))
            threshold = delta.reshape(-1).topk(kth).values[-1]
            out[k] |= delta == threshold
    return out


@pytest.mark.parametrize("name", ["ties_bf16", "ties_fp16", "task_arithmetic_bf16"])
def test_compute_dtype_float32_is_the_more_precise_explicit_choice(stand_ins, name):
    want = load_file(REFERENCE / f"{name}.safetensors")
    exact = {"parameters": {"tie_break": "mergekit"}} if "ties" in name else {}
    precise = _merge(stand_ins, name, f"{name}_f32", compute_dtype="float32", **exact)
    assert _differing(precise, want)[0] > 0, "float32 arithmetic should differ from mergekit's 16-bit arithmetic somewhere"


def test_compute_dtype_other_than_float32_or_dtype_is_refused(stand_ins):
    with pytest.raises(ValueError, match="compute_dtype must be float32"):
        _merge(stand_ins, "ties_bf16", "bad", compute_dtype="float16")


@pytest.mark.parametrize("name", sorted(DARE_CONFIGS))
def test_random_drop_statistics_match_mergekits(stand_ins, name):
    """mergekit's DARE / DELLA masks come from an unseeded generator: compare how many entries each output keeps
    at the base's value (dropped by every source) and the L1 distance to the base, not the entries."""
    want = load_file(REFERENCE / f"{name}.safetensors")
    got = _merge(stand_ins, name, f"{name}_ours")
    base = load_state_dict(stand_ins / "base")
    n = sum(v.numel() for v in base.values())
    kept_base = [sum(int((m[k] == base[k]).sum()) for k in base) / n for m in (got, want)]
    l1 = [sum(float((m[k].float() - base[k].float()).abs().sum()) for k in base) for m in (got, want)]
    # density 0.5 for both sources: an entry keeps the base's value with probability ~0.25 (both dropped)
    # plus exact ties; with ~21k entries the binomial sd of that fraction is ~0.003, so 0.02 is ~7 sd.
    assert abs(kept_base[0] - kept_base[1]) < 0.02, kept_base
    assert abs(l1[0] - l1[1]) / l1[1] < 0.05, l1
    assert all(got[k].dtype == torch.bfloat16 for k in got)
