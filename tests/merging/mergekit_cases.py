"""Small generated Llama-shaped models and mergekit-style configs, shared by the compatibility test and the
script that records mergekit 0.1.5's outputs (benchmarks/merging/record_mergekit_reference.py).

The models are generated from fixed seeds (torch CPU generator), stored in bfloat16 (what real checkpoints
use), so the recorded outputs can be compared without committing the inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

HIDDEN, INTER, LAYERS, VOCAB = 32, 48, 2, 64
REFERENCE = Path(__file__).parent / "data" / "mergekit_ref"
MODELS = ("base", "ft0", "ft1", "ft2")


def shapes() -> dict[str, tuple[int, ...]]:
    return llama_shapes(HIDDEN, INTER, LAYERS, VOCAB)


def llama_shapes(hidden: int, inter: int, layers: int, vocab: int) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a Llama-style decoder (also the 106 M-parameter benchmark's)."""
    s: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            s[p + f"self_attn.{n}.weight"] = (hidden, hidden)
        s[p + "mlp.gate_proj.weight"] = (inter, hidden)
        s[p + "mlp.up_proj.weight"] = (inter, hidden)
        s[p + "mlp.down_proj.weight"] = (hidden, inter)
        s[p + "input_layernorm.weight"] = (hidden,)
        s[p + "post_attention_layernorm.weight"] = (hidden,)
    s["model.norm.weight"] = (hidden,)
    s["lm_head.weight"] = (vocab, hidden)
    return s


def build_models(root: Path) -> Path:
    """Base + three fine-tuned-like copies (base + seeded noise of a few base ulps to ~1%), bfloat16, with a
    Llama config.json (mergekit reads the architecture from it)."""
    from reprolab.mergers.weights.io import save_state_dict

    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
           "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
           "num_key_value_heads": 4, "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "max_position_embeddings": 128,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    g = torch.Generator().manual_seed(2026)
    base = {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes().items()}
    for i, name in enumerate(MODELS):
        scale = 0.0 if i == 0 else 0.002 * i
        sd = {k: (v + scale * torch.randn(v.shape, generator=g)).to(torch.bfloat16) for k, v in base.items()}
        save_state_dict(sd, root / name)
        (root / name / "config.json").write_text(json.dumps(cfg))
    return root


# mergekit's documented example configs (docs/merge_methods, examples/), rewritten onto the local stand-ins.
CONFIGS: dict[str, str] = {
    "ties_bf16": """
models:
  - model: {d}/ft0
    parameters: {{density: 0.5, weight: 0.5}}
  - model: {d}/ft1
    parameters: {{density: 0.5, weight: 0.3}}
  - model: {d}/ft2
    parameters: {{density: 0.3, weight: 0.2}}
merge_method: ties
base_model: {d}/base
parameters: {{normalize: true, int8_mask: true}}
dtype: bfloat16
""",
    "ties_fp16": """
models:
  - model: {d}/ft0
    parameters: {{density: 0.2, weight: 1.0}}
  - model: {d}/ft1
    parameters: {{density: 0.2, weight: 1.0}}
merge_method: ties
base_model: {d}/base
parameters: {{normalize: true}}
dtype: float16
""",
    "ties_f32": """
models:
  - model: {d}/ft0
    parameters: {{density: 0.5, weight: 0.7}}
  - model: {d}/ft1
    parameters: {{density: 0.4, weight: 0.3}}
merge_method: ties
base_model: {d}/base
parameters: {{normalize: false}}
dtype: float32
""",
    "task_arithmetic_bf16": """
models:
  - model: {d}/ft0
    parameters: {{weight: 0.6}}
  - model: {d}/ft1
    parameters: {{weight: 0.4}}
  - model: {d}/base
merge_method: task_arithmetic
base_model: {d}/base
parameters: {{lambda: 0.9}}
dtype: bfloat16
""",
    "linear_bf16": """
models:
  - model: {d}/ft0
    parameters: {{weight: 1.0}}
  - model: {d}/ft1
    parameters: {{weight: 0.5}}
  - model: {d}/ft2
    parameters: {{weight: 0.25}}
merge_method: linear
dtype: bfloat16
""",
    "ties_stored_dtype": """
models:
  - model: {d}/ft0
    parameters: {{density: 0.6, weight: 0.5}}
  - model: {d}/ft1
    parameters: {{density: 0.6, weight: 0.5}}
merge_method: ties
base_model: {d}/base
""",
    "breadcrumbs_bf16": """
models:
  - model: {d}/ft0
    parameters: {{density: 0.6, gamma: 0.05, weight: 0.5}}
  - model: {d}/ft1
    parameters: {{density: 0.5, gamma: 0.02, weight: 0.5}}
merge_method: breadcrumbs
base_model: {d}/base
dtype: bfloat16
""",
    "breadcrumbs_ties_f32": """
models:
  - model: {d}/ft0
    parameters: {{density: 0.7, gamma: 0.01, weight: 0.6}}
  - model: {d}/ft1
    parameters: {{density: 0.7, gamma: 0.01, weight: 0.4}}
  - model: {d}/ft2
    parameters: {{density: 0.5, gamma: 0.03, weight: 0.4}}
merge_method: breadcrumbs_ties
base_model: {d}/base
parameters: {{normalize: true, rescale: true}}
dtype: float32
""",
    "passthrough_bf16": """
models:
  - model: {d}/ft1
    parameters: {{scale: 0.7}}
merge_method: passthrough
dtype: bfloat16
""",
    "nearswap_bf16": """
models:
  - model: {d}/base
  - model: {d}/ft2
merge_method: nearswap
base_model: {d}/base
parameters: {{t: 0.004}}
dtype: bfloat16
""",
    # mergekit's spherical and tensor-adaptive methods (scalar parameters; gradients and slices: another suite)
    "slerp_bf16": """
models:
  - model: {d}/base
  - model: {d}/ft2
merge_method: slerp
base_model: {d}/base
parameters: {{t: 0.3}}
dtype: bfloat16
""",
    "nuslerp_bf16": """
models:
  - model: {d}/ft0
    parameters: {{weight: 0.4}}
  - model: {d}/ft1
    parameters: {{weight: 0.7}}
merge_method: nuslerp
dtype: bfloat16
""",
    "nuslerp_rows_base_bf16": """
models:
  - model: {d}/ft1
    parameters: {{weight: 1.0}}
  - model: {d}/ft2
    parameters: {{weight: 2.0}}
merge_method: nuslerp
base_model: {d}/base
parameters: {{nuslerp_flatten: false, nuslerp_row_wise: true}}
dtype: bfloat16
""",
    "multislerp_base_bf16": """
models:
  - model: {d}/ft0
    parameters: {{weight: 0.5}}
  - model: {d}/ft1
    parameters: {{weight: 0.3}}
  - model: {d}/ft2
    parameters: {{weight: 0.2}}
merge_method: multislerp
base_model: {d}/base
dtype: bfloat16
""",
    "multislerp_f32": """
models:
  - model: {d}/ft0
    parameters: {{weight: 1.0}}
  - model: {d}/ft2
    parameters: {{weight: 3.0}}
merge_method: multislerp
parameters: {{normalize_weights: true, eps: 1.0e-6}}
dtype: float32
""",
    "karcher_bf16": """
models:
  - model: {d}/ft0
  - model: {d}/ft1
  - model: {d}/ft2
merge_method: karcher
parameters: {{max_iter: 20, tol: 1.0e-6}}
dtype: bfloat16
""",
    "karcher_with_base_f32": """
models:
  - model: {d}/ft0
  - model: {d}/ft2
merge_method: karcher
base_model: {d}/base
dtype: float32
""",
    "model_stock_bf16": """
models:
  - model: {d}/ft0
  - model: {d}/ft1
  - model: {d}/ft2
merge_method: model_stock
base_model: {d}/base
dtype: bfloat16
""",
    "model_stock_filter_wise_stored_dtype": """
models:
  - model: {d}/base
  - model: {d}/ft1
  - model: {d}/ft2
merge_method: model_stock
base_model: {d}/base
parameters: {{filter_wise: true}}
""",
    "sce_bf16": """
models:
  - model: {d}/ft0
  - model: {d}/ft1
  - model: {d}/ft2
merge_method: sce
base_model: {d}/base
parameters: {{select_topk: 0.5}}
dtype: bfloat16
""",
    "sce_f32": """
models:
  - model: {d}/ft0
  - model: {d}/ft2
merge_method: sce
base_model: {d}/base
parameters: {{int8_mask: true}}
dtype: float32
""",
    "arcee_fusion_bf16": """
models:
  - model: {d}/base
  - model: {d}/ft2
merge_method: arcee_fusion
base_model: {d}/base
dtype: bfloat16
""",
    "ram_bf16": """
models:
  - model: {d}/ft0
  - model: {d}/ft1
  - model: {d}/ft2
merge_method: ram
base_model: {d}/base
parameters: {{epsilon: 0.003}}
dtype: bfloat16
""",
    "ramplus_tl_bf16": """
models:
  - model: {d}/ft0
  - model: {d}/ft1
  - model: {d}/ft2
merge_method: ramplus_tl
base_model: {d}/base
parameters: {{epsilon: 0.004, r: 0.5, alpha: 0.6}}
dtype: bfloat16
""",
}
# mergekit writes these outputs in float32 whatever `dtype` says (arcee_fusion's keep mask and ramplus_tl's boost
# are float32 tensors, and nothing casts the result back); reprolab writes the configured dtype. Compared after
# that cast.
FLOAT32_OUTPUT = {"arcee_fusion_bf16", "ramplus_tl_bf16"}
# DARE and DELLA draw their drop masks from an unseeded generator in mergekit: only mask statistics compare.
DARE_CONFIGS: dict[str, str] = {
    "dare_ties_bf16": """
models:
  - model: {d}/ft0
    parameters: {{density: 0.5, weight: 0.5}}
  - model: {d}/ft1
    parameters: {{density: 0.5, weight: 0.5}}
merge_method: dare_ties
base_model: {d}/base
parameters: {{int8_mask: true}}
dtype: bfloat16
""",
    "della_bf16": """
models:
  - model: {d}/ft0
    parameters: {{density: 0.5, epsilon: 0.1, weight: 0.5}}
  - model: {d}/ft1
    parameters: {{density: 0.5, epsilon: 0.1, weight: 0.5}}
merge_method: della
base_model: {d}/base
parameters: {{lambda: 1.0}}
dtype: bfloat16
""",
    "dare_linear_bf16": """
models:
  - model: {d}/ft0
    parameters: {{density: 0.5, weight: 0.6}}
  - model: {d}/ft1
    parameters: {{density: 0.5, weight: 0.4}}
merge_method: dare_linear
base_model: {d}/base
dtype: bfloat16
""",
    "della_linear_bf16": """
models:
  - model: {d}/ft1
    parameters: {{density: 0.5, epsilon: 0.05, weight: 0.5}}
  - model: {d}/ft2
    parameters: {{density: 0.5, epsilon: 0.05, weight: 0.5}}
merge_method: della_linear
base_model: {d}/base
dtype: bfloat16
""",
}


def write_config(root: Path, name: str, extra: str = "") -> Path:
    text = {**CONFIGS, **DARE_CONFIGS}[name].format(d=root) + extra
    path = root / f"{name}.yaml"
    path.write_text(text)
    return path
