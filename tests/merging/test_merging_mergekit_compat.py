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
from reprolab.mergers.weights.config import parse_config
from reprolab.mergers.weights.engine import merge_state_dicts, merge_tensors
from reprolab.mergers.weights.run import run_merge
from tests.merging.mergekit_cases import (
    CONFIGS,
    DARE_CONFIGS,
    FLOAT32_OUTPUT,
    REFERENCE,
    build_models,
    write_config,
)


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
    exact = {"parameters": {"tie_break": "mergekit"}} if name.startswith("ties") else {}  # breadcrumbs' default
    got = _merge(stand_ins, name, f"{name}_exact", **exact)
    if name in FLOAT32_OUTPUT:  # mergekit writes float32 whatever `dtype` says; reprolab writes the dtype
        assert all(v.dtype == torch.float32 for v in want.values())
        want = {k: v.to(got[k].dtype) for k, v in want.items()}
    assert all(got[k].dtype == want[k].dtype for k in want)
    assert _differing(got, want)[0] == 0, "tie_break: mergekit must be bit-identical to mergekit"
    if name.startswith(TIE_BREAKING):  # tie_break: index differs only where entries tie at a cut
        got = _merge(stand_ins, name, f"{name}_index", parameters={"tie_break": "index"})
        tied = _tied_at_threshold(stand_ins, name)
        for k in want:
            differs = got[k] != want[k]
            assert not (differs & ~tied[k]).any(), f"{k}: differs from mergekit away from threshold ties"


# methods whose choice among entries tied at a magnitude cut is a `tie_break` (default index order)
TIE_BREAKING = ("ties", "breadcrumbs")


def _cut_values(delta: torch.Tensor, name: str, params: dict) -> list[torch.Tensor]:
    """The |delta| values at which mergekit's magnitude cuts fall: TIES keeps the k = max(1, int(density * numel))
    largest; breadcrumbs keeps ascending ranks [bottom, bottom + keep) (its gamma largest dropped)."""
    flat, n = delta.reshape(-1), delta.numel()
    if name.startswith("ties"):
        return [flat.topk(max(1, int(params["density"] * n))).values[-1]]
    keep, top = int(params["density"] * n), int(params.get("gamma", 0.01) * n)
    bottom = max(0, n - keep - top)
    asc = flat.sort().values
    return [asc[i] for i in (bottom, bottom + keep - 1) if 0 <= i < n]


def _tied_at_threshold(root, name) -> dict[str, torch.Tensor]:
    """Per tensor, the entries where some source's |delta| (in the merge dtype) equals one of its magnitude cuts
    (:func:`_cut_values`): only there may the default tie break differ from mergekit."""
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
            for cut in _cut_values(delta, name, {"density": density, **m["parameters"]}):
                out[k] |= delta == cut
    return out


@pytest.mark.parametrize("name", ["ties_bf16", "ties_fp16", "task_arithmetic_bf16", "nuslerp_bf16",
                                  "multislerp_base_bf16", "karcher_bf16", "model_stock_bf16", "sce_bf16",
                                  "ram_bf16"])
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


def test_slerp_computes_in_float32_at_every_dtype(stand_ins):
    """mergekit's slerp kernel works in float32 whatever the dtype, so the explicit float32 path is its output too."""
    want = load_file(REFERENCE / "slerp_bf16.safetensors")
    got = _merge(stand_ins, "slerp_bf16", "slerp_f32", compute_dtype="float32")
    assert _differing(got, want)[0] == 0


def _refused(root, name, edit, match):
    cfg = yaml.safe_load(write_config(root, name).read_text())
    edit(cfg)
    path = root / f"{name}_bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=match) as info:
        parse_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _params(**kv):
    return lambda cfg: cfg.setdefault("parameters", {}).update(kv)


def _drop(key):
    return lambda cfg: cfg.pop(key)


def _model_param(i, **kv):
    return lambda cfg: cfg["models"][i].setdefault("parameters", {}).update(kv)


def _keep_models(n):
    return lambda cfg: cfg.update(models=cfg["models"][:n])


def _add_model(path_of):
    return lambda cfg: cfg["models"].append({"model": path_of(cfg)})


_OTHER = lambda cfg: cfg["models"][0]["model"].rsplit("/", 1)[0] + "/ft0"  # noqa: E731


@pytest.mark.parametrize(
    ("name", "edit", "match"),
    [
        ("slerp_bf16", _drop("parameters"), r"slerp.*needs parameter\(s\) \['t'\]"),
        ("slerp_bf16", _params(t="0.5"), r"parameters\.t must be a number"),
        ("slerp_bf16", _drop("base_model"), r"needs `base_model`"),
        ("slerp_bf16", _add_model(_OTHER), r"takes exactly 1 model\(s\) besides the base, got 2"),
        ("slerp_bf16", _model_param(1, weight=0.5), r"models\[1\].*unknown per-model parameter 'weight'"),
        ("nuslerp_bf16", _add_model(lambda c: c["models"][0]["model"].replace("ft0", "ft2")), r"exactly 2 model"),
        ("nuslerp_bf16", _params(nuslerp_flatten="no"), r"parameters\.nuslerp_flatten must be a YAML boolean"),
        ("multislerp_f32", _params(eps=-1.0), r"parameters\.eps must lie in \[0, inf\]"),
        ("multislerp_f32", _model_param(0, weight="heavy"), r"models\[0\].*parameters\.weight must be a number"),
        ("karcher_bf16", _params(max_iter=2.5), r"parameters\.max_iter must be an integer"),
        ("karcher_bf16", _params(max_iter=-1), r"parameters\.max_iter must be >= 0"),
        ("karcher_bf16", _params(tol=-1e-3), r"parameters\.tol must lie in \[0, inf\]"),
        ("karcher_bf16", _model_param(0, weight=2.0), r"unknown per-model parameter 'weight' for 'karcher'"),
        ("model_stock_bf16", _keep_models(1), r"takes at least 2 model\(s\) besides the base, got 1"),
        ("model_stock_bf16", _drop("base_model"), r"needs `base_model`"),
        ("model_stock_bf16", _params(filter_wise=1), r"parameters\.filter_wise must be a YAML boolean"),
        ("sce_bf16", _params(select_topk=0.0), r"parameters\.select_topk must lie in \(0, 1\]"),
        ("sce_bf16", _params(select_topk=1.5), r"parameters\.select_topk must lie in \(0, 1\]"),
        ("sce_bf16", _params(weight=0.5), r"sce.*unknown parameter\(s\) \['weight'\]"),
        ("arcee_fusion_bf16", _params(t=0.5), r"arcee_fusion.*unknown parameter\(s\) \['t'\]"),
        ("arcee_fusion_bf16", _add_model(_OTHER), r"exactly 1 model"),
        ("ram_bf16", _params(epsilon=-0.1), r"parameters\.epsilon must lie in \[0, inf\]"),
        ("ramplus_tl_bf16", _params(alpha=-0.1), r"parameters\.alpha must lie in \[0, inf\]"),
        ("ramplus_tl_bf16", _params(r="big"), r"parameters\.r must be a number"),
    ],
)
def test_bad_parameters_of_the_new_methods_are_refused_in_one_line(stand_ins, name, edit, match):
    _refused(stand_ins, name, edit, match)


def test_karcher_takes_a_named_base_as_one_more_model(stand_ins):
    """mergekit adds a base_model that `models` does not list as one more input (karcher has no base role)."""
    cfg = parse_config(write_config(stand_ins, "karcher_with_base_f32"))
    assert [p.name for p in cfg.sources] == ["ft0", "ft2", "base"]


def test_multislerp_with_cancelling_directions_is_one_clear_error():
    a = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"multislerp of tensor 'w'.*weighted mean direction .* is zero"):
        merge_tensors("multislerp", None, [a, -a, a * 2], weights=[1.0, 1.0, 0.0], name="w")


def test_methods_that_need_a_base_refuse_to_run_without_one():
    a = {"w": torch.ones(3)}
    for method in ("slerp", "model_stock", "arcee_fusion"):
        with pytest.raises(ValueError, match="needs the pretrained base model"):
            merge_state_dicts(None, [a, a], method, params={"t": 0.5} if method == "slerp" else None)


def test_arcee_fusion_samples_quantiles_of_large_tensors_from_the_seeded_generator():
    """Above a million entries mergekit estimates the quantiles from an unseeded random sample; reprolab's
    sample is seeded per tensor name, so the same config and seed give the same merge."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(1100, 1000, generator=g)
    other = base + 0.1 * torch.randn(1100, 1000, generator=g)
    runs = [merge_tensors("arcee_fusion", base, [other], seed=s) for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1])
    kept = [float((r != base).float().mean()) for r in runs]
    assert 0.0 < kept[0] < 0.5 and abs(kept[0] - kept[2]) < 0.01, kept


# mergekit 0.1.5's registry (mergekit/merge_methods/registry.py), every name it runs
_MERGEKIT_0_1_5_METHODS = {
    "linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della",
    "della_linear", "passthrough", "nearswap", "slerp", "nuslerp", "multislerp", "karcher", "model_stock", "sce",
    "arcee_fusion", "ram", "ramplus_tl",
}


def test_every_mergekit_method_is_registered_and_compared_with_mergekit():
    from reprolab.mergers.weights import list_methods

    assert set(list_methods()) >= _MERGEKIT_0_1_5_METHODS
    compared = {yaml.safe_load(text.format(d="."))["merge_method"] for text in {**CONFIGS, **DARE_CONFIGS}.values()}
    assert compared >= _MERGEKIT_0_1_5_METHODS, "a method without a recorded case"
