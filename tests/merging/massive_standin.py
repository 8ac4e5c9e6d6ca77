"""A tiny stand-in for the MASSIVE lab, in the on-disk format docs/merging.md asks for, generated locally.

``pretrained/`` is an XLM-R-shaped ``XLMRobertaForSequenceClassification`` built from a transformers config
(2 layers, hidden 32; never downloaded) with a word-level fast tokenizer; one folder per locale holds a
perturbed copy (a stand-in "fine-tune"); ``<locale>.jsonl`` has MASSIVE 1.1 records (``partition``, ``utt``,
``intent``); ``uriel_syntax.csv`` has one feature row per locale. Seconds to write.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

LOCALES = ("sw-KE", "vi-VN", "th-TH", "km-KH", "cy-GB", "sq-AL", "fr-FR", "de-DE", "hi-IN", "ta-IN")


def write_massive_standin(
    root: Path,
    locales: Sequence[str] = LOCALES,
    *,
    n_labels: int = 60,
    id2label: bool = True,
    per_split: int = 24,
    nxn: bool = False,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write ``root/models`` and ``root/data``; returns (models_dir, data_dir). ``nxn`` also writes an
    ``nxn.csv`` (random accuracies with a strong diagonal: the stand-in models themselves are untrained)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    rng = np.random.default_rng(seed)
    models_dir, data_dir = root / "models", root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    intents = [f"intent_{i:02d}" for i in range(n_labels)]
    words = [f"w{i}" for i in range(80)]
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {tok: i for i, tok in enumerate([*specials, *words])}
    for li, loc in enumerate(locales):
        with (data_dir / f"{loc}.jsonl").open("w") as f:
            for part in ("train", "dev", "test"):
                for _ in range(per_split):
                    y = int(rng.integers(0, n_labels))
                    utt = " ".join(words[(y + li + int(k)) % len(words)] for k in rng.integers(0, 6, 5))
                    f.write(json.dumps({"id": "0", "locale": loc, "partition": part, "utt": utt,
                                        "intent": intents[y]}) + "\n")
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>",
    )
    labels = {"id2label": dict(enumerate(intents)), "label2id": {n: i for i, n in enumerate(intents)}} if id2label else {}
    config = transformers.XLMRobertaConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=72, type_vocab_size=1, pad_token_id=vocab["<pad>"], bos_token_id=0,
        eos_token_id=2, num_labels=n_labels, **labels,
    )
    torch.manual_seed(seed)
    model = transformers.XLMRobertaForSequenceClassification(config).eval()
    model.save_pretrained(models_dir / "pretrained")
    fast.save_pretrained(models_dir / "pretrained")
    base = {k: v.clone() for k, v in model.state_dict().items()}
    for li, loc in enumerate(locales):
        gen = torch.Generator().manual_seed(1000 + li)
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    v.copy_(base[k] + 0.05 * torch.randn(v.shape, generator=gen))
        model.save_pretrained(models_dir / loc)
    with (models_dir / "uriel_syntax.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["locale", *[f"f{i}" for i in range(6)]])
        for loc in locales:
            w.writerow([loc, *rng.integers(0, 2, 6).tolist()])
    if nxn:
        acc = rng.uniform(0.2, 0.6, (len(locales), len(locales)))
        np.fill_diagonal(acc, rng.uniform(0.8, 0.9, len(locales)))
        with (models_dir / "nxn.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["source", *locales])
            for loc, row in zip(locales, acc, strict=True):
                w.writerow([loc, *[f"{a:.4f}" for a in row]])
    return models_dir, data_dir
