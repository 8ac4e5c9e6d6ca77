"""mergekit's slices, parameter gradients, filters and tokenizer settings give mergekit's results (issue 14): the
configs of tests/merging/mergekit_arch_cases.py on generated Llama / Mistral / Qwen2 / Phi / GPT-2 stand-ins,
through ``reprolab merge``, against mergekit 0.1.5's outputs recorded by
benchmarks/merging/record_mergekit_layout_reference.py (per-tensor digests; mergekit is not a test dependency).

Equal means bit-identical: every tensor's bytes (TIES with ``tie_break: mergekit``), the layer and vocabulary
counts of config.json and, with tokenizer settings, every token's row of the embedding and LM head (matched by
token: mergekit orders a union's new tokens by a hash map), the padding rows, the vocabulary and the chat
template.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoConfig

from reprolab.mergers.weights.run import run_merge
from tests.merging.mergekit_arch_cases import CASES, REFERENCE, build_models, summarize, write_config

REF = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {"cases": {}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    d = tmp_path_factory.mktemp("mk_layout")
    built: set[tuple[str, bool]] = set()

    def get(name: str):
        arch, tok, _ = CASES[name]
        if (arch, tok) not in built:
            build_models(d, arch, tok)
            built.add((arch, tok))
        return d

    return get


def test_reference_covers_every_case_and_was_recorded_with_mergekit_0_1_5():
    assert REF["recorded_with"]["mergekit"] == "0.1.5"
    assert set(REF["cases"]) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_layout_configs_give_mergekits_output(root, name):
    d = root(name)
    path = write_config(d, name)
    cfg = yaml.safe_load(path.read_text())
    if cfg["merge_method"] == "ties":  # entries tied at the trim threshold: keep mergekit's pick
        cfg["parameters"] = {**(cfg.get("parameters") or {}), "tie_break": "mergekit"}
        path.write_text(yaml.safe_dump(cfg))
    out = d / f"ours_{name}"
    run_merge(path, out, show_progress=False, overwrite=True)
    got, want = summarize(out, CASES[name][1]), REF["cases"][name]
    if "mergekit_error" in want:
        # mergekit 0.1.5 wrote the tensors, then could not save config.json (transformers 5 refuses a Qwen2
        # config whose `layer_types` no longer matches `num_hidden_layers`); ours must be loadable
        assert "layer_types" in want["mergekit_error"]
    else:
        assert got["config"] == want["config"]
    AutoConfig.from_pretrained(str(out), local_files_only=True)  # a config.json transformers accepts
    assert got["tensors"].keys() == want["tensors"].keys()
    differ = [k for k in want["tensors"] if got["tensors"][k] != want["tensors"][k]]
    assert not differ, f"{len(differ)} tensor(s) differ from mergekit's, e.g. {differ[:3]}"
    if CASES[name][1]:
        assert got["vocab"] == want["vocab"]
        assert got["chat_template"] == want["chat_template"]
        for k, rows in want["rows"].items():
            bad = [t for t in rows if t != "<padding>" and got["rows"][k][t] != rows[t]]
            assert not bad, f"{k}: rows of token(s) {bad[:5]} differ from mergekit's"
            ours, theirs = torch.tensor(got["rows"][k]["<padding>"]), torch.tensor(rows["<padding>"])
            assert ours.shape == theirs.shape
            if ours.numel():
                # a mean of n rows summed in another order: within n float32 roundings of the largest entry
                n = len(want["vocab"])
                bound = n * torch.finfo(torch.float32).eps * float(theirs.abs().max())
                assert float((ours - theirs).abs().max()) <= bound, f"{k}: padding rows"


def test_a_frankenmerge_states_its_layer_count(root):
    d = root("slices_passthrough_bf16")
    out = d / "ours_slices_check"
    run_merge(write_config(d, "slices_passthrough_bf16"), out, show_progress=False, overwrite=True)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 6
