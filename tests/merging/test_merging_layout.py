"""Slices, parameter gradients, filters and tokenizer settings: the interpolation rules, and every bad setting a
one-line error naming the config file, the model or slice and the field (unit and through the CLI)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from reprolab.cli import cli
from reprolab.mergers.weights import load_state_dict, save_state_dict
from reprolab.mergers.weights.run import run_merge
from reprolab.mergers.weights.schedule import evaluate, parse_setting
from tests.merging.mergekit_arch_cases import build_models


def test_gradients_interpolate_as_mergekit():
    g = parse_setting("weight", [0, 0.5, 0.3, 0.7, 1], 1.0, "cfg")
    # mergekit: scaled = t * (n - 1), linear between the two neighbours, in Python floats
    assert evaluate(g, "x", 0.0) == 0.0 and evaluate(g, "x", 1.0) == 1.0
    assert evaluate(g, "x", 1 / 3) == (1 - (4 / 3 - 1)) * 0.5 + (4 / 3 - 1) * 0.3
    assert (
        evaluate(parse_setting("normalize", [True, False], True, "cfg"), "x", 0.6) is True
    )  # picked, not mixed
    flt = parse_setting("weight", [{"filter": "mlp", "value": [1, 0]}, {"value": 0.5}], 1.0, "cfg")
    assert evaluate(flt, "model.layers.0.mlp.up_proj.weight", 0.25) == 0.75
    assert evaluate(flt, "model.layers.0.self_attn.q_proj.weight", 0.25) == 0.5
    assert evaluate(parse_setting("weight", {"filter": "mlp", "value": 2}, 1.0, "cfg"), "attn", 0) is None


def test_filter_values_are_checked_by_their_parameters_rule():
    # by the parameter's rule (density, tie_break, max_iter), not by that of the field `value`, which has none:
    # any number passed, and a choice was held to the default as its only value
    assert evaluate(parse_setting("parameters.tie_break", {"value": "mergekit"}, "index", "cfg"), "x", 0) == "mergekit"
    assert evaluate(parse_setting("parameters.rescale", [{"value": "paper"}], True, "cfg"), "x", 0) == "paper"
    with pytest.raises(ValueError, match=r"cfg: parameters.density\[0\].value must lie in \(0, 1\], got 5"):
        parse_setting("parameters.density", [{"filter": "mlp", "value": 5}], 1.0, "cfg")
    with pytest.raises(ValueError, match=r"parameters.max_iter.value must be >= 0, got -3"):
        parse_setting("parameters.max_iter", {"value": -3}, 10, "cfg")


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("layout"), "llama", tokenizers=True)


def _cfg(tmp: Path, text: str) -> Path:
    p = tmp / "merge.yaml"
    p.write_text(textwrap.dedent(text))
    return p


BAD = {
    "layer range too long": (
        "slices: [{sources: [{model: ft0, layer_range: [0, 9]}]}]\nmerge_method: passthrough",
        "slices[0].sources[0] (ft0): layer_range [0, 9] does not fit the 4 layers",
    ),
    "layer range not a pair": (
        "slices: [{sources: [{model: ft0, layer_range: [2]}]}]\nmerge_method: passthrough",
        "slices[0].sources[0] (ft0): layer_range must be [start, end]",
    ),
    "slice lengths differ": (
        "slices: [{sources: [{model: ft0, layer_range: [0, 2]}, {model: ft1, layer_range: [0, 3]}]}]"
        "\nmerge_method: linear",
        "slices[0]: every source of a slice must give the same number",
    ),
    "slice without layer_range": (
        "slices: [{sources: [{model: ft0}]}]\nmerge_method: passthrough",
        "slices[0].sources[0]: each source needs `model:` and `layer_range",
    ),
    "slice unknown key": (
        "slices: [{sources: [{model: ft0, layer_range: [0, 1]}], weight: 1}]\nmerge_method: passthrough",
        "slices[0]: unknown key(s) ['weight']",
    ),
    "residual_weight": (
        "slices: [{sources: [{model: ft0, layer_range: [0, 1]}], residual_weight: 0.5}]\n"
        "merge_method: passthrough",
        "slices[0]: residual_weight is not implemented",
    ),
    "modules": (
        "modules: {text: {models: [{model: ft0}]}}\nmerge_method: linear",
        "`modules` layouts are not supported",
    ),
    "models and slices": (
        "models: [{model: ft0}]\nslices: [{sources: [{model: ft0, layer_range: [0, 1]}]}]\n"
        "merge_method: passthrough",
        "give exactly one of `models`",
    ),
    "slice without base": (
        "base_model: base\nslices: [{sources: [{model: ft0, layer_range: [0, 2]}]}]\nmerge_method: ties",
        "slices[0]: the method needs the base model, so list",
    ),
    "gradient out of range": (
        "base_model: base\nmodels: [{model: ft0, parameters: {density: [0.5, 1.5]}}]\nmerge_method: ties",
        "models[0] (ft0): parameters.density must lie in (0, 1], got 1.5",
    ),
    "gradient of lists": (
        "base_model: base\nmodels: [{model: ft0, parameters: {weight: [[1, 2]]}}]\nmerge_method: ties",
        "models[0] (ft0): parameters.weight: a gradient must list plain values",
    ),
    "filter without value": (
        "base_model: base\nmodels: [{model: ft0, parameters: {weight: [{filter: mlp}]}}]\nmerge_method: ties",
        "models[0] (ft0): parameters.weight[0] must be a mapping with `value`",
    ),
    "filter unknown key": (
        "base_model: base\nmodels: [{model: ft0, parameters: {weight: {filter: mlp, value: 1, x: 2}}}]"
        "\nmerge_method: ties",
        "parameters.weight must be a mapping with `value` and an optional",
    ),
    "filter not a string": (
        "base_model: base\nmodels: [{model: ft0, parameters: {weight: [{filter: 3, value: 1}]}}]\n"
        "merge_method: ties",
        "parameters.weight[0].filter must be a non-empty string",
    ),
    "mixed list": (
        "base_model: base\nmodels: [{model: ft0, parameters: {weight: [{filter: mlp, value: 1}, 2]}}]\n"
        "merge_method: ties",
        "parameters.weight mixes filter entries and plain values",
    ),
    "filter value out of range": (
        "base_model: base\nmodels: [{model: ft0, parameters: {density: [{filter: mlp, value: 1.5}, {value: 0.5}]}}]"
        "\nmerge_method: ties",
        "models[0] (ft0): parameters.density[0].value must lie in (0, 1], got 1.5",
    ),
    "filter value of a bounded parameter": (
        "base_model: base\nmodels: [{model: ft0, parameters: {density: 0.5, gamma: {filter: mlp, value: 2}}}]"
        "\nmerge_method: breadcrumbs",
        "models[0] (ft0): parameters.gamma.value must lie in [0, 1], got 2",
    ),
    "trim_scope model with gradient": (
        "base_model: base\nmodels: [{model: ft0, parameters: {weight: [0, 1]}}]\n"
        "merge_method: ties\nparameters: {trim_scope: model}",
        "trim_scope: model (one threshold over the whole model) cannot be combined",
    ),
    "trim_scope model in a slice": (
        "base_model: base\nslices: [{sources: [{model: base, layer_range: [0, 4]}, {model: ft0, layer_range: [0, 4]}],"
        " parameters: {trim_scope: model, density: 0.5}}]\nmerge_method: ties",
        "trim_scope: model (one threshold over the whole model) cannot be combined",
    ),
    "trim_scope gradient": (
        "base_model: base\nmodels: [{model: ft0, parameters: {density: 0.5}}]\n"
        "merge_method: ties\nparameters: {trim_scope: [tensor, model]}",
        "parameters.trim_scope must be one value for the whole config, not a gradient or filter list",
    ),
    "trim_scope filter list": (
        "base_model: base\nmodels: [{model: ft0, parameters: {density: 0.5}}]\nmerge_method: ties\n"
        "parameters: {trim_scope: [{filter: mlp, value: model}, {value: tensor}]}",
        "parameters.trim_scope must be one value for the whole config",
    ),
    "trim_scope filter list in a slice": (
        "base_model: base\nslices: [{sources: [{model: base, layer_range: [0, 4]}, {model: ft0, layer_range: [0, 4]}],"
        " parameters: {trim_scope: {filter: mlp, value: tensor}}}]\nmerge_method: neuromerging",
        "slices[0]: parameters.trim_scope must be one value for the whole config",
    ),
    "tokens source unknown kind": (
        "base_model: base\nmodels: [{model: ft0}]\nmerge_method: linear\n"
        "tokenizer: {tokens: {w1: {source: {kind: average}}}}",
        "tokenizer.tokens['w1'].source must be a model path",
    ),
    "tokens token and token_id": (
        "base_model: base\nmodels: [{model: ft0}]\nmerge_method: linear\ntokenizer: {tokens: "
        "{w1: {source: {kind: model_token, model: ft0, token: a, token_id: 1}}}}",
        "give exactly one of `token` and `token_id`",
    ),
    "tokens force not a bool": (
        "base_model: base\nmodels: [{model: ft0}]\nmerge_method: linear\n"
        "tokenizer: {tokens: {w1: {source: ft0, force: 'yes'}}}",
        ".force must be a YAML boolean",
    ),
    "pad_to_multiple_of zero": (
        "base_model: base\nmodels: [{model: ft0}]\nmerge_method: linear\ntokenizer: {pad_to_multiple_of: 0}",
        "tokenizer.pad_to_multiple_of must be a positive",
    ),
    "tokenizer_source missing model": (
        "base_model: base\nmodels: [{model: ft0}]\nmerge_method: linear\ntokenizer_source: ft9",
        "tokenizer_source: model path 'ft9' does not exist",
    ),
    "token from an unmerged model": (
        "base_model: base\nmodels: [{model: ft0}]\nmerge_method: linear\n"
        "tokenizer: {tokens: {zz: {source: ft2}}}",
        "model",
    ),
    "chat template too short": (
        "base_model: base\nmodels: [{model: ft0}]\nmerge_method: linear\nchat_template: '{x}'",
        "is not a Jinja template",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_layout_and_tokenizer_settings_are_one_line_errors(arch, case):
    body, match = BAD[case]
    cfg = _cfg(arch, body + "\n")
    with pytest.raises(ValueError) as err:
        run_merge(cfg, arch / "out", show_progress=False)
    assert match in str(err.value) and str(cfg) in str(err.value), str(err.value)
    r = CliRunner().invoke(cli, ["merge", str(cfg), str(arch / "out"), "--quiet"])
    lines = r.output.strip().splitlines()
    assert r.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error: ") and match in lines[0], (
        r.output
    )
    assert not (arch / "out").exists()


def test_a_filter_list_may_give_any_valid_choice(arch, tmp_path):
    cfg = _cfg(tmp_path, f"base_model: {arch}/base\nmodels: [{{model: {arch}/ft0, parameters: {{density: 0.5}}}}]\n"
                         "merge_method: ties\nparameters: {tie_break: [{filter: mlp, value: mergekit}, {value: index}]}\n")
    r = CliRunner().invoke(cli, ["merge", str(cfg), str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "model.safetensors").is_file()


GRADIENT_SLERP = """
slices:
  - sources:
      - {{model: {d}/base, layer_range: [0, 4]}}
      - {{model: {d}/ft0, layer_range: [0, 4]}}
merge_method: slerp
base_model: {d}/base
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
{fallback}dtype: float32
"""


def test_a_required_parameter_may_be_a_filtered_gradient(arch, tmp_path):
    # mergekit's examples/gradient-slerp.yml: slerp's required `t` given only per filter was refused as missing
    # (bit-identical to mergekit 0.1.5's output, checked by hand on these stand-ins)
    cfg = _cfg(tmp_path, GRADIENT_SLERP.format(d=arch, fallback="    - value: 0.5\n"))
    r = CliRunner().invoke(cli, ["merge", str(cfg), str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 0, r.output
    out, base = load_state_dict(tmp_path / "out"), load_state_dict(arch / "base")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(out[q], base[q])  # t = 0 in layer 0's attention
    assert not torch.equal(out["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])
    # a tensor no filter gives a `t` to is still an error, naming it
    cfg = _cfg(tmp_path, GRADIENT_SLERP.format(d=arch, fallback=""))
    with pytest.raises(ValueError, match=r"tensor 'model\.embed_tokens\.weight': merge method 'slerp' needs parameter"):
        run_merge(cfg, tmp_path / "out2", show_progress=False)
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize(
    "linked,settings",
    [
        ("tokenizer.json", "tokenizer_source: union"),
        ("tokenizer.json", "tokenizer_source: ft0"),
        ("tokenizer_config.json", "chat_template: auto"),
        ("config.json", "parameters: {weight: [0, 1]}"),  # layout.model_config reads every model's config.json
    ],
)
def test_tokenizer_and_config_files_through_a_symlink_out_of_a_model_folder_are_refused(arch, tmp_path, linked,
                                                                                          settings):
    # the tokenizer (transformers) and config.json of a merged model were read through a symlink to anywhere;
    # refused as for weights and copied files (io.inside_folder)
    import shutil

    shutil.copytree(arch / "ft0", tmp_path / "ft0")
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tmp_path / "ft0" / linked, tmp_path / "elsewhere" / linked)
    (tmp_path / "ft0" / linked).symlink_to(tmp_path / "elsewhere" / linked)
    cfg = _cfg(tmp_path, f"base_model: {arch}/base\nmodels: [{{model: {arch}/base}}, {{model: ft0}}]\n"
                         f"merge_method: linear\n{settings}\n")
    match = f"file '{linked}' resolves to {tmp_path / 'elsewhere' / linked}, outside the model folder"
    with pytest.raises(ValueError, match=match):
        run_merge(cfg, tmp_path / "out", show_progress=False)
    r = CliRunner().invoke(cli, ["merge", str(cfg), str(tmp_path / "out"), "--quiet"])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and match in lines[0] and str(cfg) in lines[0], r.output
    assert not (tmp_path / "out").exists()


def test_a_model_without_a_tokenizer_is_a_one_line_error(tmp_path):
    g = torch.Generator().manual_seed(0)
    for name in ("base", "ft0"):
        save_state_dict({"model.embed_tokens.weight": torch.randn(8, 4, generator=g)}, tmp_path / name)
        (tmp_path / name / "config.json").write_text(json.dumps({"vocab_size": 8}))
    cfg = _cfg(
        tmp_path,
        "base_model: base\nmodels: [{model: ft0}]\nmerge_method: task_arithmetic\ntokenizer_source: union\n",
    )
    with pytest.raises(ValueError, match="cannot load its tokenizer"):
        run_merge(cfg, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_tokenizer_files_are_written_listed_and_replace_the_donors(arch, tmp_path):
    cfg = _cfg(
        tmp_path,
        f"base_model: {arch}/base\nmodels: [{{model: {arch}/ft1}}]\nmerge_method: task_arithmetic\n"
        "tokenizer: {source: union, pad_to_multiple_of: 16}\nchat_template: chatml\n",
    )
    run_merge(cfg, tmp_path / "out", show_progress=False)
    out = tmp_path / "out"
    manifest = json.loads((out / ".reprolab-merge.json").read_text())["files"]
    assert {"tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors"} <= set(manifest)
    assert set(manifest) == {p.name for p in out.iterdir() if not p.name.startswith(".")}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert len(tok.get_vocab()) == 72 and "x3" in tok.get_vocab()
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 80
    assert load_state_dict(out)["model.embed_tokens.weight"].shape == (80, 32)
    text = tok.apply_chat_template([{"role": "user", "content": "w1 w2"}], tokenize=False)
    assert text == "<|im_start|>user\nw1 w2<|im_end|>\n"


def test_gradient_merge_streams_and_is_deterministic(arch, tmp_path):
    text = (
        f"base_model: {arch}/base\nmodels: [{{model: {arch}/ft0, parameters: {{weight: [0, 1], density: 0.5}}}}]\n"
        "merge_method: dare_ties\nseed: 3\n"
    )
    for name in ("a", "b"):
        run_merge(_cfg(tmp_path, text), tmp_path / name, show_progress=False)
    a, b = load_state_dict(tmp_path / "a"), load_state_dict(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = load_state_dict(arch / "base")
    # weight 0 at layer 0: DARE-TIES of a zero-weighted task vector leaves the base
    assert torch.equal(a["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])
    assert not torch.equal(a["model.layers.3.mlp.up_proj.weight"], base["model.layers.3.mlp.up_proj.weight"])


def test_the_base_guard_looks_at_the_whole_model_not_at_frozen_embeddings(arch, tmp_path):
    """Per-tensor parameters run through the layout path: a source whose embeddings equal the base's (frozen
    during fine-tuning) merges; a source equal to the base everywhere is still refused."""
    sd = load_state_dict(arch / "ft0")
    base = load_state_dict(arch / "base")
    for name, frozen in (
        ("frozen", ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"]),
        ("same", list(sd)),
    ):
        save_state_dict({k: (base[k] if k in frozen else v) for k, v in sd.items()}, tmp_path / name)
        (tmp_path / name / "config.json").write_text((arch / "ft0" / "config.json").read_text())
        cfg = _cfg(
            tmp_path,
            f"base_model: {arch}/base\nmodels: [{{model: {tmp_path / name}, "
            "parameters: {weight: [0.5, 1]}}]\nmerge_method: task_arithmetic\n",
        )
        if name == "frozen":
            run_merge(cfg, tmp_path / f"out_{name}", show_progress=False)
        else:
            with pytest.raises(ValueError, match="identical to source"):
                run_merge(cfg, tmp_path / f"out_{name}", show_progress=False)


def test_row_alignment_rules():
    """mergekit's PermutedVocabulary rules on a hand-made vocabulary: kept rows, the only model's row, the base's
    row, the mean, zero, overrides (forced or not) and mean padding rows."""
    from reprolab.mergers.weights.tokenizer import TokenOverride, TokenSource, Vocabulary, align_rows

    base, a, b = Path("base"), Path("a"), Path("b")
    vocab = {"all": 0, "only_a": 1, "base_a": 2, "a_b": 3, "none": 4, "forced": 5}
    rows = {
        base: torch.tensor([0, -1, 1, -1, -1, 2]),
        a: torch.tensor([0, 1, 2, 3, -1, 4]),
        b: torch.tensor([0, -1, -1, 1, -1, 2]),
    }
    tokens = {"forced": TokenOverride(TokenSource(b, token="all"), force=True)}
    voc = Vocabulary(None, vocab, 8, rows, {b: {"all": 0}}, tokens, base)
    t = {
        base: torch.arange(3 * 2.0).view(3, 2),
        a: 10 + torch.arange(5 * 2.0).view(5, 2),
        b: 20 + torch.arange(3 * 2.0).view(3, 2),
    }
    out = align_rows(voc, t, "embed")
    for m in (base, a, b):
        assert out[m].shape == (8, 2)
        assert torch.equal(out[m][1], t[a][1])  # only a has it
        assert torch.equal(out[m][4], torch.zeros(2))  # nobody has it
        assert torch.equal(out[m][5], t[b][0])  # forced override: b's row of "all"
        assert torch.equal(out[m][6], out[m][:6].mean(dim=0)) and torch.equal(out[m][7], out[m][6])
    assert torch.equal(out[base][0], t[base][0]) and torch.equal(out[a][0], t[a][0])
    assert torch.equal(out[b][2], t[base][1])  # the base's row where the base has it
    assert torch.equal(out[base][3], (t[a][3] + t[b][1]) / 2)  # else the mean of those that have it
    assert torch.equal(out[a][3], t[a][3])


def test_a_multi_document_config_orders_merges_referenced_from_slices(arch, tmp_path):
    """The final merge (first in the file) slices an earlier named merge: it runs after it, as mergekit-multi."""
    cfg = _cfg(
        tmp_path,
        f"""
        slices:
          - sources: [{{model: mid, layer_range: [0, 2]}}]
          - sources: [{{model: {arch}/ft1, layer_range: [2, 4]}}]
        merge_method: passthrough
        ---
        name: mid
        models: [{{model: {arch}/ft0, parameters: {{weight: [0.2, 0.8]}}}}, {{model: {arch}/ft2}}]
        merge_method: linear
        parameters: {{weight: 0.5}}
        """,
    )
    run_merge(cfg, tmp_path / "out", show_progress=False, intermediate_dir=tmp_path / "inter")
    out, mid = load_state_dict(tmp_path / "out"), load_state_dict(tmp_path / "inter" / "mid")
    assert torch.equal(out["model.layers.1.mlp.up_proj.weight"], mid["model.layers.1.mlp.up_proj.weight"])
    ft1 = load_state_dict(arch / "ft1")
    assert torch.equal(out["model.layers.3.mlp.up_proj.weight"], ft1["model.layers.3.mlp.up_proj.weight"])
