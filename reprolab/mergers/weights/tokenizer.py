"""The merged model's tokenizer and embedding rows: mergekit's ``tokenizer_source``, ``tokenizer`` and
``chat_template``.

- ``tokenizer_source: base`` (or ``tokenizer: {source: base}``): the base's tokenizer; ``union``: the base's
  tokenizer plus every token of the other models it lacks (ordinary tokens first, then added/special tokens,
  each in the order of the models in the config and of the token ids within a model: mergekit takes Python
  dict order of a Rust hash map there, which differs from run to run, so only the token -> row pairing is
  comparable); a model path: that model's tokenizer. ``tokenizer.tokens`` adds tokens and says where their rows
  come from; ``pad_to_multiple_of`` pads the vocabulary with rows equal to the mean row.
- Rows (mergekit's ``PermutedVocabulary``), per vocabulary tensor (token embeddings, LM head) and per model of
  the merge: a token the model has keeps its row; one it lacks gets a default row: the ``tokens`` override
  (another model's row, a named token's row of a model, or zero), else the row of the only model that has it,
  else the base's, else the mean over the models that have it (zero if none). ``force: true`` uses the
  override even where the model has the token. Arithmetic in the merge dtype, as mergekit.
- ``chat_template``: a Jinja template, ``chatml``, or ``auto`` (the template most of the models' tokenizers
  carry); written into the output tokenizer. mergekit's other built-in template names are refused by name.

The output tokenizer is saved with transformers into OUT (through the merge's temporaries), replacing the
donor's tokenizer files; ``config.json`` states the new ``vocab_size``. Tokenizers are read from the model
folders only (``local_files_only``), never downloaded.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# tokenizer files of a donor model that a written tokenizer replaces (mergekit's list of tokenizer files)
TOKENIZER_FILES = frozenset(
    {
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer.model",
        "added_tokens.json",
        "merges.txt",
        "vocab.json",
        "vocab.txt",
        "chat_template.jinja",
        "chat_template.json",
    }
)
_SOURCES = ("base", "union")
_TOKENIZER_KEYS = {"source", "tokens", "pad_to_multiple_of"}
_TOKEN_KEYS = {"source", "force"}
_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


@dataclass(frozen=True)
class TokenSource:
    """Where an added or overridden token's row comes from: a model's row of the same token, a model's row of
    another token (``token`` or ``token_id``), or zeros (``model`` None)."""

    model: Path | None
    token: str | None = None
    token_id: int | None = None


@dataclass(frozen=True)
class TokenOverride:
    source: TokenSource | None
    force: bool = False


@dataclass(frozen=True)
class TokenizerSpec:
    source: str | Path | None  # "base", "union", a model folder; None: keep the donor's (chat_template only)
    tokens: Mapping[str, TokenOverride] = field(default_factory=dict)
    pad_to_multiple_of: int | None = None
    chat_template: str | None = None

    @property
    def aligns(self) -> bool:
        """Embedding rows are realigned (mergekit builds a new vocabulary whenever a source is given)."""
        return self.source is not None


def _token_source(raw: Any, where: str, resolve) -> TokenSource | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return TokenSource(resolve(raw, where))
    if not isinstance(raw, dict) or raw.get("kind") not in ("model_token", "zero"):
        raise ValueError(
            f"{where} must be a model path, {{kind: zero}} or {{kind: model_token, model, token | "
            f"token_id}}, got {raw!r}"
        )
    if raw["kind"] == "zero":
        if set(raw) != {"kind"}:
            raise ValueError(f"{where}: {{kind: zero}} takes no other keys, got {sorted(map(str, raw))}")
        return TokenSource(None)
    bad = sorted(map(str, set(raw) - {"kind", "model", "token", "token_id"}))
    if bad or "model" not in raw:
        raise ValueError(
            f"{where}: model_token needs `model` and one of `token` / `token_id`"
            f"{f'; unknown key(s) {bad}' if bad else ''}"
        )
    token, token_id = raw.get("token"), raw.get("token_id")
    if (token is None) == (token_id is None):
        raise ValueError(f"{where}: give exactly one of `token` and `token_id`")
    if token is not None and not isinstance(token, str):
        raise ValueError(f"{where}.token must be a string, got {token!r}")
    if token_id is not None and (not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0):
        raise ValueError(f"{where}.token_id must be a non-negative integer, got {token_id!r}")
    return TokenSource(resolve(raw["model"], f"{where}.model"), token, token_id)


def parse_tokenizer(
    raw: Mapping[str, Any], cdir: Path, config_path: Path, aliases: Mapping[str, Path] | None = None
) -> TokenizerSpec | None:
    """The tokenizer settings of a config (None when it has none); errors name the file and the field."""
    from reprolab.mergers.weights.config import _resolve_path  # one rule for model references

    def resolve(ref: Any, where: str) -> Path:
        return _resolve_path(ref, cdir, where, aliases)

    where = str(config_path)
    if raw.get("tokenizer_source") is not None and raw.get("tokenizer") is not None:
        raise ValueError(f"{where}: give `tokenizer_source` or `tokenizer`, not both (as mergekit)")
    source: str | Path | None = None
    tokens: dict[str, TokenOverride] = {}
    pad = None
    if raw.get("tokenizer_source") is not None:
        source = raw["tokenizer_source"]
        if source not in _SOURCES:
            source = resolve(source, f"{where}: tokenizer_source")
    elif raw.get("tokenizer") is not None:
        tok = raw["tokenizer"]
        if not isinstance(tok, dict):
            raise ValueError(
                f"{where}: tokenizer must be a mapping with source / tokens / pad_to_multiple_of"
            )
        bad = sorted(map(str, set(tok) - _TOKENIZER_KEYS))
        if bad:
            raise ValueError(f"{where}: tokenizer: unknown key(s) {bad}; known: {sorted(_TOKENIZER_KEYS)}")
        source = tok.get("source", "union")
        if source not in _SOURCES:
            source = resolve(source, f"{where}: tokenizer.source")
        pad = tok.get("pad_to_multiple_of")
        if pad is not None and (not isinstance(pad, int) or isinstance(pad, bool) or pad < 1):
            raise ValueError(f"{where}: tokenizer.pad_to_multiple_of must be a positive integer, got {pad!r}")
        given = tok.get("tokens") or {}
        if not isinstance(given, dict):
            raise ValueError(f"{where}: tokenizer.tokens must map token strings to {{source, force}}")
        for name, cfg in given.items():
            here = f"{where}: tokenizer.tokens[{name!r}]"
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}: tokenizer.tokens: token {name!r} must be a non-empty string")
            cfg = cfg or {}
            if not isinstance(cfg, dict) or set(cfg) - _TOKEN_KEYS:
                raise ValueError(f"{here} must be a mapping with `source` and/or `force`, got {cfg!r}")
            force = cfg.get("force", False)
            if not isinstance(force, bool):
                raise ValueError(f"{here}.force must be a YAML boolean, got {force!r}")
            tokens[name] = TokenOverride(_token_source(cfg.get("source"), f"{here}.source", resolve), force)
    template = raw.get("chat_template")
    if template is not None:
        template = _chat_template(template, where)
    if source is None and template is None:
        return None
    return TokenizerSpec(source, tokens, pad, template)


def _chat_template(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(
            f"{where}: chat_template must be a string (a Jinja template, chatml or auto), got {value!r}"
        )
    if value in ("auto", "chatml"):
        return value
    if len(value) < 256 and "\n" not in value and "{" not in value and value.isidentifier():
        raise ValueError(
            f"{where}: chat_template {value!r}: only the built-in names `chatml` and `auto` are "
            "implemented; give the template's Jinja text instead"
        )
    if len(value) < 20 or "{" not in value:
        raise ValueError(f"{where}: chat_template {value!r} is not a Jinja template (nor chatml / auto)")
    return value


def load_tokenizer(folder: Path) -> Any:
    """A model folder's tokenizer (transformers, local files only); one-line error if it has none, or if a file
    of the folder resolves outside it (transformers would follow a symlinked tokenizer.json anywhere)."""
    from reprolab.mergers.weights.engine import check_model_files

    check_model_files(folder)
    return _from_pretrained(folder)


def _from_pretrained(folder: Path) -> Any:
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise ValueError("tokenizer settings need transformers (pip install reprolab[merging])") from None
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True)
    except Exception as exc:  # transformers raises many types for a folder without a usable tokenizer
        raise ValueError(
            f"{folder}: cannot load its tokenizer ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        ) from None


def vocab_size(folder: Path, tokenizer: Any) -> int:
    from reprolab.mergers.weights.layout import model_config

    size = model_config(folder).get("vocab_size")
    return size if isinstance(size, int) and size > 0 else len(tokenizer.get_vocab())


@dataclass
class Vocabulary:
    """The output tokenizer and, per model, where each output token's row is (-1: the model lacks it)."""

    tokenizer: Any
    vocab: dict[str, int]
    size: int  # rows of the output vocabulary tensors (padded)
    rows: dict[Path, torch.Tensor]  # model -> [len(vocab)] int64 source row or -1
    original: dict[Path, dict[str, int]]
    tokens: Mapping[str, TokenOverride]
    base: Path | None


def _usable(tok: Any, size: int, folder: Path) -> dict[str, int]:
    vocab = tok.get_vocab()
    return {t: i for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i < size}


def _union(base_tok: Any, toks: Mapping[Path, Any], sizes: Mapping[Path, int]) -> Any:
    """The base's tokenizer plus the other models' tokens it lacks (a copy; the base's is not changed)."""
    with tempfile.TemporaryDirectory() as d:
        base_tok.save_pretrained(d)
        out = load_tokenizer(Path(d))
    have = set(base_tok.get_vocab())
    plain: list[str] = []
    special: dict[str, Any] = {}
    for model, tok in toks.items():
        added = tok.added_tokens_decoder
        added_names = {info.content for info in added.values()}
        for t, i in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):
            if i >= sizes[model] or t in added_names:
                continue
            if t not in have and t not in plain:
                plain.append(t)
        for i, info in sorted(added.items()):
            if i < sizes[model] and info.content not in special:
                special[info.content] = info
    plain = [t for t in plain if t not in special]
    if plain:
        out.add_tokens(plain)
    if special:
        out.add_tokens(list(special.values()))
    return out


def build_vocabulary(spec: TokenizerSpec, base: Path, models: Sequence[Path]) -> Vocabulary:
    """The output tokenizer of a merge over ``models`` (the base first) and each model's row map."""
    base_tok = load_tokenizer(base)
    sizes = {base: vocab_size(base, base_tok)}
    if any(i >= sizes[base] for i in base_tok.get_vocab().values()):
        raise ValueError(
            f"{base}: its tokenizer has tokens beyond the model's vocab_size {sizes[base]}; stripping "
            "them (mergekit does, for BPE tokenizers) is not implemented"
        )
    toks = {base: base_tok}
    for m in models:
        if m not in toks:
            toks[m] = load_tokenizer(m)
            sizes[m] = vocab_size(m, toks[m])
    if spec.source == "base":
        out = base_tok
    elif spec.source == "union":
        out = _union(base_tok, toks, sizes)
    else:
        out = toks[spec.source] if spec.source in toks else load_tokenizer(Path(spec.source))
    have = set(out.get_vocab())
    extra = [t for t in spec.tokens if t not in have]
    if extra:
        out.add_tokens(extra)
    vocab = dict(sorted(out.get_vocab().items(), key=lambda kv: kv[1]))
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(
            f"the output tokenizer's ids are not 0 .. {len(vocab) - 1} (holes in its vocabulary)"
        )
    size = len(vocab)
    if spec.pad_to_multiple_of and size % spec.pad_to_multiple_of:
        size += spec.pad_to_multiple_of - size % spec.pad_to_multiple_of
    rows = {}
    original = {}
    for m, tok in toks.items():
        own = _usable(tok, sizes[m], m)
        original[m] = own
        rows[m] = torch.tensor([own.get(t, -1) for t in vocab], dtype=torch.int64)
    for t, o in spec.tokens.items():
        src = o.source
        if src is not None and src.model is not None and src.model not in toks:
            raise ValueError(f"tokenizer.tokens[{t!r}]: model {src.model} is not one of the merged models")
    return Vocabulary(out, vocab, size, rows, original, spec.tokens, base)


def align_rows(voc: Vocabulary, tensors: Mapping[Path, torch.Tensor], name: str) -> dict[Path, torch.Tensor]:
    """Each model's vocabulary tensor (rows = tokens, axis 0) re-indexed to the output vocabulary."""
    models = list(tensors)
    dtype = tensors[models[0]].dtype
    for t in tensors.values():
        dtype = torch.promote_types(dtype, t.dtype)
    shape = tensors[models[0]].shape[1:]
    for m, t in tensors.items():
        if t.shape[1:] != shape:
            raise ValueError(
                f"tensor {name!r}: {m} has rows of shape {tuple(t.shape[1:])}, others {tuple(shape)}"
            )
        used = voc.rows[m]
        if used.numel() and int(used.max()) >= t.shape[0]:
            raise ValueError(f"tensor {name!r}: {m}'s tokenizer uses row {int(used.max())} of {t.shape[0]}")
    n = len(voc.vocab)
    forced = torch.zeros(n, dtype=torch.bool)
    for token, o in voc.tokens.items():
        if o.force and token in voc.vocab:
            forced[voc.vocab[token]] = True
    present = torch.stack([voc.rows[m] >= 0 for m in models])  # [models, tokens]
    need = (
        (~present.all(dim=0) | forced).nonzero().flatten().tolist()
    )  # tokens some model takes a default for
    tokens = list(voc.vocab)
    rows = {m: voc.rows[m].tolist() for m in models}
    defaults = {
        tid: _default_row(
            voc,
            tensors,
            rows,
            tokens[tid],
            tid,
            voc.tokens.get(tokens[tid]),
            [m for m in models if rows[m][tid] >= 0],
            dtype,
            shape,
            name,
        )
        for tid in need
    }
    out = {}
    for m in models:
        new = torch.zeros((voc.size, *shape), dtype=dtype)
        keep = (voc.rows[m] >= 0) & ~forced
        ids = keep.nonzero().flatten()
        new[ids] = tensors[m][voc.rows[m][ids]].to(dtype)
        for tid, row in defaults.items():
            if not bool(keep[tid]):
                new[tid] = row
        if voc.size > n:  # mergekit's padding rows: the mean of the real rows
            new[n:] = torch.mean(new[:n], dim=0)
        out[m] = new
    return out


def _default_row(
    voc: Vocabulary,
    tensors: Mapping[Path, torch.Tensor],
    rows: Mapping[Path, list[int]],
    token: str,
    tid: int,
    override: TokenOverride | None,
    present: list[Path],
    dtype: torch.dtype,
    shape: torch.Size,
    name: str,
) -> torch.Tensor:
    if override is None:
        if len(present) == 1:
            return tensors[present[0]][rows[present[0]][tid]]
        if not present:
            return torch.zeros(shape, dtype=dtype)
        if voc.base in tensors and rows[voc.base][tid] >= 0:
            return tensors[voc.base][rows[voc.base][tid]]
        embed = torch.zeros(shape, dtype=dtype)
        for m in present:
            embed = embed + tensors[m][rows[m][tid]]
        embed /= len(present)
        return embed
    src = override.source
    if src is None:
        raise ValueError(f"tokenizer.tokens[{token!r}]: needs a `source` (its row is not in every model)")
    if src.model is None:
        return torch.zeros(shape, dtype=dtype)
    if src.model not in tensors:
        raise ValueError(f"tokenizer.tokens[{token!r}]: model {src.model} is not merged into tensor {name!r}")
    if src.token is None and src.token_id is None:
        r = rows[src.model][tid]
        if r < 0:
            raise ValueError(f"tokenizer.tokens[{token!r}]: model {src.model} has no token {token!r}")
        return tensors[src.model][r]
    r = src.token_id if src.token_id is not None else voc.original[src.model].get(src.token, -1)
    if r is None or r < 0 or r >= tensors[src.model].shape[0]:
        what = f"token {src.token!r}" if src.token is not None else f"token id {src.token_id}"
        raise ValueError(f"tokenizer.tokens[{token!r}]: {what} not found in model {src.model}")
    return tensors[src.model][r]


def chat_template_text(spec: TokenizerSpec, models: Sequence[Path]) -> str | None:
    if spec.chat_template != "auto":
        return _CHATML if spec.chat_template == "chatml" else spec.chat_template
    from reprolab.mergers.weights.engine import check_model_files

    found = []
    for m in models:
        check_model_files(m)  # a folder pointing outside itself is refused, not skipped
        try:
            tmpl = _from_pretrained(m).chat_template
        except ValueError:
            continue  # mergekit skips models without a loadable tokenizer when voting
        if isinstance(tmpl, dict):
            tmpl = tmpl.get("default")
        if tmpl:
            found.append(tmpl.strip())
    return Counter(found).most_common(1)[0][0] if found else None


def save_tokenizer(tokenizer: Any, template: str | None) -> dict[str, bytes]:
    """The files transformers writes for ``tokenizer`` (with ``template`` as its chat template), by name."""
    if template is not None:
        tokenizer.chat_template = template
    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file()}
