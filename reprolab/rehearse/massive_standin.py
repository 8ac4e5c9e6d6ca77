"""Stand-in MASSIVE lab in the layout docs/merging.md asks for, generated locally (nothing is downloaded).

``models/``: ``pretrained/`` and one folder per locale, each a Hugging Face folder (``config.json`` of an
XLM-R-shaped ``XLMRobertaForSequenceClassification`` with 60 labels and ``id2label`` naming MASSIVE-style
intents, ``model.safetensors``, a local word-level tokenizer), ``uriel_syntax.csv`` (locale, 103 binary
features, like URIEL's syntax vectors) and ``nxn.csv`` (header of locales; rows source x target dev accuracy).
``data/``: MASSIVE 1.1 ``<locale>.jsonl`` (``id``, ``locale``, ``partition`` train/dev/test, ``scenario``,
``intent``, ``utt``, ``annot_utt``).

The "fine-tunes" are the pretrained weights plus a seeded per-locale perturbation: the lab's code paths (load,
task vectors, merges, evaluation, AdaMerging) run exactly as on real checkpoints; accuracies mean nothing.
``full`` uses XLM-R base's shapes (vocab 250,002, 12 x 768, 3072 FFN; about 1.1 GB per folder in fp32).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

# 10 locales is the fewest the suite's selections allow (7 sources + target, 3-target groups at both ends).
LOCALES = ["af-ZA", "de-DE", "en-US", "es-ES", "fr-FR", "hi-IN", "ja-JP", "sq-AL", "sw-KE", "vi-VN"]
SCENARIOS = [
    "alarm",
    "audio",
    "calendar",
    "cooking",
    "datetime",
    "email",
    "general",
    "iot",
    "lists",
    "music",
    "news",
    "play",
    "qa",
    "recommendation",
    "social",
    "takeaway",
    "transport",
    "weather",
]
ACTIONS = [
    "set",
    "query",
    "remove",
    "recommend",
    "order",
    "factoid",
    "volume_mute",
    "quirky",
    "ticket",
    "podcasts",
]
N_LABELS = 60
N_URIEL = 103
SIZES = {  # (hidden, layers, heads, ffn, vocab); utterances per locale (train, dev, test)
    "smoke": ((32, 2, 2, 64, None), (60, 60, 60)),
    "full": ((768, 12, 12, 3072, 250_002), (11514, 2033, 2974)),
}
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # XLM-R's ids 0-3 (pad 1 is XLM-R's padding_idx)


def intent_names() -> list[str]:
    names = [f"{s}_{a}" for a in ACTIONS for s in SCENARIOS]
    return names[:N_LABELS]


def _vocab(locale_words: dict[str, list[str]]) -> list[str]:
    words = sorted({w for ws in locale_words.values() for w in ws})
    return SPECIALS + words


def _tokenizer(vocab: list[str]):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=512,
    )


def _utterances(
    locale: str, words: list[str], rng: np.random.Generator, counts: tuple[int, int, int]
) -> list[dict]:
    intents = intent_names()
    rows = []
    for partition, n in zip(("train", "dev", "test"), counts, strict=True):
        for _ in range(n):
            label = int(rng.integers(0, N_LABELS))
            keywords = [words[(label * 3 + j) % len(words)] for j in range(2)]
            filler = list(rng.choice(words, 4))
            utt = " ".join(rng.permutation(keywords + filler))
            rows.append(
                {
                    "id": str(len(rows)),
                    "locale": locale,
                    "partition": partition,
                    "scenario": intents[label].split("_", 1)[0],
                    "intent": intents[label],
                    "utt": utt,
                    "annot_utt": utt,
                }
            )
    return rows


def _write_json_lines(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[list[object]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    os.replace(tmp, path)


def write_massive(
    root: Path, scale: str, seed: int = 0, locales: list[str] | None = None
) -> tuple[Path, Path]:
    """Returns (models dir, data dir): the values of REPROLAB_MASSIVE_MODELS and REPROLAB_MASSIVE_DATA."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()  # one bar per saved folder would flood the log
    locales = list(locales or LOCALES)
    (hidden, layers, heads, ffn, vocab_size), counts = SIZES[scale]
    rng = np.random.default_rng(seed)
    models_dir, data_dir = root / "models", root / "data"
    models_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    shared = [f"w{i}" for i in range(120)]  # shared "cognates" plus a private vocabulary per locale
    words = {
        loc: shared[: 60 + 6 * i] + [f"{loc.split('-')[0]}{j}" for j in range(60)]
        for i, loc in enumerate(locales)
    }
    vocab = _vocab(words)
    for loc in locales:
        _write_json_lines(data_dir / f"{loc}.jsonl", _utterances(loc, words[loc], rng, counts))

    intents = intent_names()
    config = transformers.XLMRobertaConfig(
        vocab_size=vocab_size or len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=N_LABELS,
        id2label=dict(enumerate(intents)),
        label2id={name: i for i, name in enumerate(intents)},
    )
    torch.manual_seed(seed)
    model = transformers.XLMRobertaForSequenceClassification(config).eval()
    tokenizer = _tokenizer(vocab)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.save_pretrained(models_dir / "pretrained", safe_serialization=True)
    tokenizer.save_pretrained(models_dir / "pretrained")
    for i, loc in enumerate(locales):
        gen = torch.Generator().manual_seed(seed * 1000 + i + 1)
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if tensor.is_floating_point():
                    tensor.copy_(base[name] + 0.02 * torch.randn(tensor.shape, generator=gen))
        model.save_pretrained(models_dir / loc, safe_serialization=True)
        tokenizer.save_pretrained(models_dir / loc)
    model.load_state_dict(base)

    uriel = rng.integers(0, 2, (len(locales), N_URIEL))
    _write_csv(
        models_dir / "uriel_syntax.csv",
        [
            ["locale", *[f"S_{j}" for j in range(N_URIEL)]],
            *[[loc, *row] for loc, row in zip(locales, uriel.tolist(), strict=True)],
        ],
    )
    nxn = rng.uniform(0.3, 0.7, (len(locales), len(locales)))
    np.fill_diagonal(nxn, rng.uniform(0.8, 0.9, len(locales)))
    _write_csv(
        models_dir / "nxn.csv",
        [["", *locales], *[[s, *(f"{x:.4f}" for x in row)] for s, row in zip(locales, nxn, strict=True)]],
    )
    return models_dir, data_dir
