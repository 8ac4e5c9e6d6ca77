"""The YAML merge config (mergekit's format) and run_merge end to end on small checkpoints."""

from __future__ import annotations

import textwrap

import pytest
import torch

from reprolab.mergers.weights import load_state_dict, merge_state_dicts, save_state_dict
from reprolab.mergers.weights.run import run_merge


@pytest.fixture
def models(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {"a.weight": torch.randn(6, 5, generator=g), "a.bias": torch.randn(6, generator=g)}
    srcs = [{k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(2)]
    for name, sd in (("base", base), ("ft0", srcs[0]), ("ft1", srcs[1])):
        save_state_dict(sd, tmp_path / name)
    return tmp_path, base, srcs


def _write(tmp_path, text):
    p = tmp_path / "merge.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_mergekit_ties_config_works_unchanged(models):
    tmp, base, srcs = models
    cfg = _write(tmp, """
        models:
          - model: ft0
            parameters:
              density: 0.5
              weight: 0.7
          - model: ft1
            parameters:
              density: 0.3
              weight: 0.3
          - model: base
        merge_method: ties
        base_model: base
        parameters:
          normalize: true
          int8_mask: true
        dtype: float32
        """)
    run_merge(cfg, tmp / "out", show_progress=False)
    got = load_state_dict(tmp / "out")
    want = merge_state_dicts(base, srcs, "ties", [0.7, 0.3], per_source_params=[{"density": 0.5}, {"density": 0.3}])
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("method,params", [("task_arithmetic", {}), ("linear", {}), ("dare_ties", {"density": 0.5}),
                                            ("dare_linear", {"density": 0.5})])
def test_other_mergekit_methods_and_global_parameters(models, method, params):
    tmp, base, srcs = models
    dens = f"\n  density: {params['density']}" if params else ""
    cfg = _write(tmp, f"""
models:
  - model: ft0
  - model: ft1
merge_method: {method}
base_model: base
parameters:
  weight: 0.5{dens}
out_dtype: bfloat16
""")
    run_merge(cfg, tmp / "out", show_progress=False)
    got = load_state_dict(tmp / "out")
    assert got["a.weight"].dtype == torch.bfloat16
    if method != "linear":
        want = merge_state_dicts(base, srcs, method, [0.5, 0.5], params=params, out_dtype=torch.bfloat16)
        assert torch.equal(got["a.weight"], want["a.weight"])


def test_reprolab_extras(models):
    tmp, base, srcs = models
    cfg = _write(tmp, """
        models: [{model: ft0}, {model: ft1}]
        merge_method: ties
        base_model: base
        parameters: {density: 0.4, trim_scope: model, lambda: 0.8}
        seed: 3
        """)
    run_merge(cfg, tmp / "out", show_progress=False)
    want = merge_state_dicts(base, srcs, "ties", params={"density": 0.4, "trim_scope": "model", "lambda": 0.8})
    assert torch.equal(load_state_dict(tmp / "out")["a.weight"], want["a.weight"])


@pytest.mark.parametrize(
    "text,match",
    [
        ("merge_method: ties\nbase_model: base\nmodels: [{model: ft0}]\nparameters: {density: 1.5}\n", "density"),
        ("merge_method: tiez\nbase_model: base\nmodels: [{model: ft0}]\n", "unknown merge method"),
        ("merge_method: ties\nmodels: [{model: ft0}]\n", "needs `base_model`"),
        ("merge_method: ties\nbase_model: base\nmodels: [{model: nowhere}]\n", "does not exist"),
        ("merge_method: ties\nbase_model: base\nmodels: []\n", "non-empty list"),
        ("merge_method: ties\nbase_model: base\nmodels: [{model: base}]\n", "no source models"),
        ("merge_method: ties\nbase_model: base\nmodels: [{model: ft0, paramters: {}}]\n", "unknown key"),
        ("merge_method: ties\nbase_model: base\nmodels: [{model: ft0}]\nsilces: []\n", "unknown top-level"),
        ("merge_method: ties\nbase_model: base\nmodels: [{model: ft0}]\nparameters: {density: [{filter: mlp}]}\n", "`value` is missing"),
        ("merge_method: ties\nbase_model: base\nslices: [{sources: []}]\nmodels: [{model: ft0}]\n", "exactly one of `models`"),
        ("merge_method: ties\nbase_model: base\nmodels: [{model: ft0}]\ndtype: float8\n", "unknown dtype"),
        ("merge_method: ties\nbase_model: base\nmodels: [{model: ft0}]\nparameters: {densty: 0.5}\n", "unknown parameter"),
        ("merge_method: fisher\nbase_model: base\nmodels: [{model: ft0}]\n", "fisher"),
        ("- not a mapping\n", "mapping"),
        ("merge_method: [ties\n", "invalid YAML"),
    ],
)
def test_bad_configs_raise_clear_errors(models, text, match):
    tmp, _, _ = models
    with pytest.raises(ValueError, match=match):
        run_merge(_write(tmp, text), tmp / "out", show_progress=False)


_BOMB = "".join(f"{c}: &{c} [" + ", ".join([f"*{p}" if p else "x"] * 10) + "]\n"
                for p, c in zip([None, *"abcdefg"], "abcdefgh", strict=True))  # 10^8 values from 8 lines


@pytest.mark.parametrize(
    "text,match",
    [
        # PyYAML keeps the last of two equal keys: the first setting would be silently dropped
        ("merge_method: ties\nbase_model: base\nmodels: [{model: ft0}]\ndtype: bfloat16\ndtype: float32\n",
         r":5: invalid YAML \(dtype: duplicate key \(first on line 4\)\)"),
        ("merge_method: linear\nmodels: [{model: ft0, parameters: {weight: 1, weight: 2}}]\n", ":2: .*weight: duplicate key"),
        (_BOMB + "merge_method: linear\nmodels: [{model: ft0, parameters: {weight: *h}}]\n", "alias bomb"),
        ("models: &m [{model: ft0, parameters: {weight: 1, w: *m}}]\nmerge_method: linear\n", "alias refers to itself"),
        ("models: " + "[" * 5000 + "]" * 5000 + "\nmerge_method: linear\n", "nest"),
    ],
)
def test_yaml_that_safe_load_would_half_read_is_refused_naming_the_file_and_line(models, text, match):
    tmp, _, _ = models
    cfg = _write(tmp, text)
    with pytest.raises(ValueError, match=match) as err:
        run_merge(cfg, tmp / "out", show_progress=False)
    assert str(err.value).startswith(str(cfg)) and "\n" not in str(err.value)
    assert not (tmp / "out").exists()


def test_missing_config_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        run_merge(tmp_path / "nope.yaml", tmp_path / "out")


def test_unknown_per_model_parameter_is_an_error_for_every_method(models):
    tmp, _, _ = models
    cfg = _write(tmp, "merge_method: linear\nmodels: [{model: ft0, parameters: {density: 0.5}}, {model: ft1}]\n")
    with pytest.raises(ValueError, match="unknown per-model parameter"):
        run_merge(cfg, tmp / "out", show_progress=False)


def test_a_stale_shard_nobody_merged_is_never_deleted(models):
    tmp, _, _ = models
    (tmp / "out").mkdir()
    (tmp / "out" / "model-00001-of-00002.safetensors").write_bytes(b"stale")
    cfg = _write(tmp, "merge_method: task_arithmetic\nbase_model: base\nmodels: [{model: ft0}, {model: ft1}]\n")
    with pytest.raises(ValueError, match="not empty"):
        run_merge(cfg, tmp / "out", show_progress=False)
    with pytest.raises(ValueError, match="no reprolab merge wrote"):
        run_merge(cfg, tmp / "out", show_progress=False, overwrite=True)
    assert (tmp / "out" / "model-00001-of-00002.safetensors").read_bytes() == b"stale"
