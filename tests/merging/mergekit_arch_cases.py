"""Small Llama / Mistral / Qwen2 / Phi / GPT-2-shaped stand-ins with local tokenizers, and mergekit-style configs
for slices, parameter gradients, filters and tokenizer settings (issue 14). Shared by the compatibility test
(tests/merging/test_merging_mergekit_layout.py) and the script that records mergekit 0.1.5's outputs
(benchmarks/merging/record_mergekit_layout_reference.py).

transformers gives each architecture's tensor names, shapes and config.json (built on the meta device, nothing
downloaded); the values come from a fixed-seed torch generator, so the stand-ins do not depend on transformers'
initialisation. Tokenizers are WordLevel vocabularies built with the `tokenizers` library. Stored in float32.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

REFERENCE = Path(__file__).parent / "data" / "mergekit_ref" / "layout.json"
LAYERS, HIDDEN, INTER, VOCAB, EXTRA = 4, 32, 48, 64, 8
SPECIALS = ("<unk>", "<s>", "</s>")
ARCHS = ("llama", "mistral", "qwen2", "phi", "gpt2")
MODELS = ("base", "ft0", "ft1", "ft2")


def _config(arch: str, vocab: int):
    import transformers

    common = {"vocab_size": vocab, "bos_token_id": 1, "eos_token_id": 2}
    llama_like = {
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 48,
        "tie_word_embeddings": False,
        **common,
    }
    if arch == "llama":
        return transformers.LlamaConfig(**llama_like)
    if arch == "mistral":
        return transformers.MistralConfig(**llama_like)
    if arch == "qwen2":
        return transformers.Qwen2Config(**llama_like)
    if arch == "phi":
        return transformers.PhiConfig(
            hidden_size=HIDDEN,
            intermediate_size=INTER,
            num_hidden_layers=LAYERS,
            num_attention_heads=4,
            max_position_embeddings=48,
            **common,
        )
    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=48, **common)
    raise ValueError(arch)


def _shapes(arch: str, vocab: int) -> tuple[dict[str, tuple[int, ...]], object]:
    from transformers import AutoModelForCausalLM

    cfg = _config(arch, vocab)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    cfg.architectures = [type(model).__name__]
    tied = getattr(cfg, "tie_word_embeddings", False)
    shapes = {
        k: tuple(v.shape) for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")
    }
    return shapes, cfg


def vocabulary(model: str) -> list[str]:
    """ft1 knows EXTRA more words than the others (appended), ft2 lists the shared words in reverse order."""
    words = [f"w{i}" for i in range(VOCAB - len(SPECIALS))]
    if model == "ft1":
        words += [f"x{i}" for i in range(EXTRA)]
    if model == "ft2":
        words = words[::-1]
    return [*SPECIALS, *words]


def _write_tokenizer(folder: Path, tokens: list[str], chat_template: str | None) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(SPECIALS))
    tok.save(str(folder / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<unk>",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "model_max_length": 64,
    }
    if chat_template:
        cfg["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))


TEMPLATE_A = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
TEMPLATE_B = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"


def build_models(root: Path, arch: str = "llama", tokenizers: bool = False) -> Path:
    """Base + three fine-tuned-like copies (base + seeded noise) of ``arch`` under ``root/arch``; with
    ``tokenizers`` the models get the vocabularies of :func:`vocabulary` and embedding rows that follow them."""
    from reprolab.mergers.weights.io import save_state_dict

    folder = root / (f"{arch}_tok" if tokenizers else arch)
    g = torch.Generator().manual_seed(ARCHS.index(arch) + (100 if tokenizers else 0))
    base_vocab = vocabulary("base")
    shapes, _ = _shapes(arch, VOCAB)
    base = {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}
    extra_rows = {
        k: torch.randn((EXTRA, *s[1:]), generator=g) * 0.05 for k, s in shapes.items() if s[:1] == (VOCAB,)
    }
    for i, name in enumerate(MODELS):
        tokens = vocabulary(name) if tokenizers else base_vocab
        sd_shapes, cfg = _shapes(arch, len(tokens))
        scale = 0.0 if i == 0 else 0.01 * i
        sd = {}
        for k, s in sd_shapes.items():
            noise = scale * torch.randn(base[k].shape, generator=g)
            v = base[k] + noise
            if s[:1] == (len(tokens),) and shapes[k][:1] == (VOCAB,) and tokenizers:
                rows = {t: v[j] for j, t in enumerate(base_vocab)}
                rows.update({f"x{j}": extra_rows[k][j] for j in range(EXTRA)})
                v = torch.stack([rows[t] for t in tokens])
            sd[k] = v.contiguous()
        out = folder / name
        save_state_dict(sd, out)
        cfg.torch_dtype = "float32"
        (out / "config.json").write_text(cfg.to_json_string())
        if tokenizers:
            _write_tokenizer(out, tokens, TEMPLATE_B if name == "ft2" else TEMPLATE_A)
    return folder


# (architecture, tokenizers?, config). mergekit's documented forms: per-model gradients (`weight: [0, 0.5, 1]`),
# filter lists with a fallback (examples/gradient-slerp.yml's shape), frankenmerge slices with passthrough
# (examples/orcamini-platy-44layer.yml's shape), per-slice merges, and tokenizer settings
# (docs: tokenizer_source / tokenizer.tokens / pad_to_multiple_of / chat_template).
CASES: dict[str, tuple[str, bool, str]] = {
    "gradient_ties_f32": (
        "llama",
        False,
        """
models:
  - model: {d}/ft0
    parameters:
      weight: [0.2, 0.5, 1.0]
      density: [{{filter: self_attn, value: [0.3, 0.9]}}, {{filter: mlp, value: 0.5}}, {{value: 0.8}}]
  - model: {d}/ft1
    parameters: {{weight: [1.0, 0.1], density: 0.6}}
  - model: {d}/base
merge_method: ties
base_model: {d}/base
parameters: {{normalize: true}}
dtype: float32
""",
    ),
    "gradient_ties_bf16": (
        "llama",
        False,
        """
models:
  - model: {d}/ft0
    parameters: {{weight: [0.0, 0.5, 1.0], density: 0.5}}
  - model: {d}/ft1
    parameters: {{weight: [1.0, 0.5, 0.0], density: 0.5}}
merge_method: ties
base_model: {d}/base
parameters: {{normalize: false}}
dtype: bfloat16
""",
    ),
    "filter_task_arithmetic_bf16": (
        "llama",
        False,
        """
models:
  - model: {d}/ft0
    parameters:
      weight:
        - filter: self_attn
          value: [0, 0.5, 0.3, 0.7, 1]
        - filter: mlp
          value: [1, 0.5, 0.7, 0.3, 0]
        - value: 0.5
  - model: {d}/ft1
    parameters: {{weight: 0.5}}
merge_method: task_arithmetic
base_model: {d}/base
parameters:
  lambda: [{{filter: embed, value: 0.5}}, {{value: [0.9, 1.1]}}]
dtype: bfloat16
""",
    ),
    "top_level_gradient_linear_f32": (
        "llama",
        False,
        """
models:
  - model: {d}/ft0
  - model: {d}/ft1
    parameters: {{weight: 0.3}}
merge_method: linear
parameters:
  weight: [{{filter: layers.1., value: 2.0}}, {{value: [0.1, 0.9]}}]
dtype: float32
""",
    ),
    "slices_passthrough_bf16": (
        "llama",
        False,
        """
slices:
  - sources:
      - model: {d}/ft0
        layer_range: [0, 3]
  - sources:
      - model: {d}/ft1
        layer_range: [1, 4]
merge_method: passthrough
dtype: bfloat16
""",
    ),
    "slices_ties_f32": (
        "llama",
        False,
        """
slices:
  - sources:
      - model: {d}/base
        layer_range: [0, 2]
      - model: {d}/ft0
        layer_range: [0, 2]
        parameters: {{weight: [0.2, 0.8]}}
      - model: {d}/ft1
        layer_range: [0, 2]
    parameters: {{density: 0.5, weight: 0.5}}
  - sources:
      - model: {d}/base
        layer_range: [1, 4]
      - model: {d}/ft1
        layer_range: [1, 4]
        parameters: {{density: [0.9, 0.3]}}
      - model: {d}/ft2
        layer_range: [0, 3]
        parameters: {{density: 0.7, weight: 0.4}}
merge_method: ties
base_model: {d}/base
parameters: {{normalize: true, weight: 0.6}}
dtype: float32
""",
    ),
    "slices_linear_bf16": (
        "llama",
        False,
        """
slices:
  - sources:
      - model: {d}/ft0
        layer_range: [2, 4]
      - model: {d}/ft2
        layer_range: [0, 2]
    parameters:
      weight: [{{filter: mlp, value: [1, 0.2]}}, {{value: 0.5}}]
  - sources:
      - model: {d}/ft1
        layer_range: [0, 4]
      - model: {d}/ft2
        layer_range: [0, 4]
merge_method: linear
parameters: {{weight: 0.5}}
dtype: bfloat16
""",
    ),
    "tokenizer_union_ties_f32": (
        "llama",
        True,
        """
models:
  - model: {d}/ft0
    parameters: {{weight: 0.5, density: 0.7}}
  - model: {d}/ft1
    parameters: {{weight: 0.5, density: 0.7}}
  - model: {d}/ft2
    parameters: {{weight: 0.3, density: 0.7}}
merge_method: ties
base_model: {d}/base
tokenizer_source: union
dtype: float32
""",
    ),
    "tokenizer_base_linear_f32": (
        "llama",
        True,
        """
models:
  - model: {d}/base
    parameters: {{weight: 0.2}}
  - model: {d}/ft0
    parameters: {{weight: 0.6}}
  - model: {d}/ft2
    parameters: {{weight: 0.4}}
merge_method: linear
base_model: {d}/base
tokenizer_source: base
dtype: float32
""",
    ),
    "tokenizer_model_task_arithmetic_bf16": (
        "llama",
        True,
        """
models:
  - model: {d}/ft1
    parameters: {{weight: 0.7}}
  - model: {d}/ft2
    parameters: {{weight: 0.3}}
merge_method: task_arithmetic
base_model: {d}/base
tokenizer_source: {d}/ft1
dtype: bfloat16
""",
    ),
    "tokenizer_tokens_pad_f32": (
        "llama",
        True,
        """
models:
  - model: {d}/ft0
    parameters: {{weight: 0.5}}
  - model: {d}/ft1
    parameters: {{weight: 0.5}}
merge_method: task_arithmetic
base_model: {d}/base
tokenizer:
  source: union
  pad_to_multiple_of: 32
  tokens:
    w5:
      source: {d}/ft1
      force: true
    "<|im_start|>":
      source: {{kind: model_token, model: {d}/ft0, token: "<s>"}}
    "<|im_end|>":
      source: {{kind: zero}}
    x2:
      source: {{kind: model_token, model: {d}/base, token_id: 7}}
      force: true
dtype: float32
""",
    ),
    "chat_template_literal_f32": (
        "llama",
        True,
        """
models:
  - model: {d}/base
    parameters: {{weight: 0.2}}
  - model: {d}/ft0
    parameters: {{weight: 0.5}}
  - model: {d}/ft2
    parameters: {{weight: 0.5}}
merge_method: linear
base_model: {d}/base
chat_template: "{{% for m in messages %}}{{{{ m['role'] }}}}: {{{{ m['content'] }}}};{{% endfor %}}"
dtype: float32
""",
    ),
    "chat_template_auto_union_f32": (
        "llama",
        True,
        """
models:
  - model: {d}/base
  - model: {d}/ft0
  - model: {d}/ft1
  - model: {d}/ft2
merge_method: linear
base_model: {d}/base
parameters: {{weight: 0.25}}
tokenizer_source: union
chat_template: auto
dtype: float32
""",
    ),
    # the spherical methods with an optional base under a gradient (merged tensor by tensor with per-tensor
    # weights): a named base is the origin, not a source; without one the models are merged as they are
    "gradient_multislerp_base_bf16": (
        "mistral",
        False,
        """
models:
  - model: {d}/ft0
    parameters: {{weight: [0.2, 0.8]}}
  - model: {d}/ft1
    parameters: {{weight: 0.5}}
  - model: {d}/ft2
    parameters: {{weight: [{{filter: mlp, value: 0.3}}, {{value: [0.6, 0.1]}}]}}
merge_method: multislerp
base_model: {d}/base
dtype: bfloat16
""",
    ),
    "gradient_nuslerp_no_base_bf16": (
        "qwen2",
        False,
        """
models:
  - model: {d}/ft0
    parameters: {{weight: [0.3, 0.9]}}
  - model: {d}/ft1
    parameters: {{weight: 0.7}}
merge_method: nuslerp
dtype: bfloat16
""",
    ),
}
for _arch in ARCHS:
    CASES[f"{_arch}_gradient_ties_bf16"] = (
        _arch,
        False,
        """
models:
  - model: {d}/ft0
    parameters: {{weight: [0.3, 1.0], density: [{{filter: mlp, value: 0.4}}, {{value: [0.9, 0.5]}}]}}
  - model: {d}/ft1
    parameters: {{weight: 0.6, density: 0.6}}
merge_method: ties
base_model: {d}/base
dtype: bfloat16
""",
    )
    CASES[f"{_arch}_slices_passthrough_f32"] = (
        _arch,
        False,
        """
slices:
  - sources:
      - model: {d}/ft0
        layer_range: [0, 2]
  - sources:
      - model: {d}/ft1
        layer_range: [1, 4]
  - sources:
      - model: {d}/ft2
        layer_range: [3, 4]
merge_method: passthrough
dtype: float32
""",
    )


def write_config(root: Path, name: str) -> Path:
    arch, tok, text = CASES[name]
    folder = root / (f"{arch}_tok" if tok else arch)
    path = root / f"{name}.yaml"
    path.write_text(text.format(d=folder))
    return path


def tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(
        t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
    ).hexdigest()[:32]


def summarize(out: Path, tokenizers: bool) -> dict:
    """What a merged folder holds, in a form small enough to commit: per tensor dtype, shape and a digest;
    the layer / vocabulary counts of config.json; with tokenizers, a digest per token row of each vocabulary
    tensor (the union's token ids may differ: mergekit orders them by a hash map), the vocabulary and the chat
    template."""
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(out.glob("*.safetensors")):
        sd.update(load_file(f))
    cfg = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else {}
    res: dict = {
        "config": {
            **{k: cfg.get(k) for k in ("num_hidden_layers", "n_layer", "vocab_size")},
            "dtype": cfg.get("dtype") or cfg.get("torch_dtype"),  # transformers 5 writes `dtype`
        }
    }
    if not tokenizers:
        res["tensors"] = {
            k: [str(v.dtype).removeprefix("torch."), list(v.shape), tensor_digest(v)]
            for k, v in sorted(sd.items())
        }
        return res
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    vocab = tok.get_vocab()
    rows = {}
    tensors = {}
    for k, v in sorted(sd.items()):
        tensors[k] = [str(v.dtype).removeprefix("torch."), list(v.shape)]
        if v.shape[0] >= len(vocab) and v.dim() == 2 and ("embed" in k or "lm_head" in k):
            rows[k] = {t: tensor_digest(v[i]) for t, i in sorted(vocab.items())}
            # padding rows are the mean of the token rows: summed in token-id order, which for a union is
            # mergekit's hash order, so kept as values to compare within the rounding of that sum
            rows[k]["<padding>"] = v[len(vocab) :].tolist()
        else:
            tensors[k].append(tensor_digest(v))
    res.update(tensors=tensors, rows=rows, vocab=sorted(vocab), chat_template=tok.chat_template)
    return res
