"""Multi-document (mergekit-multi) configs: several merges in one file, run in dependency order.

As mergekit-multi: each document may carry a ``name``; a named merge is written to ``INTERMEDIATE_DIR/name`` and
later documents refer to it by that name in ``base_model`` or ``models[].model``; the one unnamed document is
the final merge, written to OUT. Names are unique, references may not form a cycle, and every document is
validated before the first merge starts (hours of merging must not end on a typo in the last document).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reprolab.mergers.weights.config import MergeConfig, parse_config

FINAL = None  # the key of the unnamed, final merge


def _references(doc: dict[str, Any]) -> list[str]:
    """Every model reference of a document: base, models, slice sources and bases, the tokenizer source."""
    refs = [doc.get("base_model"), doc.get("tokenizer_source")]
    tok = doc.get("tokenizer")
    if isinstance(tok, dict):
        refs.append(tok.get("source"))
    for entry in doc.get("models") or []:
        refs.append(entry.get("model") if isinstance(entry, dict) else entry)
    for sl in doc.get("slices") or []:
        if isinstance(sl, dict):
            refs.append(sl.get("base_model"))
            refs += [src.get("model") for src in sl.get("sources") or [] if isinstance(src, dict)]
    return [r for r in refs if isinstance(r, str)]


def plan_documents(
    config_path: Path, docs: list[Any], out_dir: Path, intermediate_dir: Path | None
) -> list[tuple[str | None, Path, MergeConfig]]:
    """(name, output folder, validated config) of every merge, dependencies first."""
    if intermediate_dir is None:
        raise ValueError(f"{config_path}: holds {len(docs)} YAML documents (a mergekit-multi config); pass "
                         "--intermediate-dir DIR for its named merges (the unnamed one is written to OUT)")
    named: dict[str | None, dict[str, Any]] = {}
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ValueError(f"{config_path}: document {i + 1} must be a mapping")
        doc = dict(doc)
        name = doc.pop("name", FINAL)
        if name is not FINAL and (not isinstance(name, str) or not name or "/" in name or name.startswith(".")):
            raise ValueError(f"{config_path}: document {i + 1}: name must be a plain folder name, got {name!r}")
        if name in named:
            what = f"merge name {name!r} appears twice" if name else "several unnamed (final) merges"
            raise ValueError(f"{config_path}: document {i + 1}: {what}")
        named[name] = doc
    if FINAL not in named:
        raise ValueError(f"{config_path}: no unnamed document: leave the final merge without `name` (it goes to OUT)")
    outputs = {n: (Path(intermediate_dir) / n if n is not FINAL else Path(out_dir)) for n in named}
    aliases = {n: p.resolve() for n, p in outputs.items() if n is not FINAL}
    order: list[str | None] = []
    state: dict[str | None, str] = {}

    def visit(name: str | None, chain: tuple[str | None, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError(f"{config_path}: circular dependency between merges {[*chain, name]}")
        state[name] = "visiting"
        for ref in _references(named[name]):
            if ref in named and ref is not FINAL:
                visit(ref, (*chain, name))
        state[name] = "done"
        order.append(name)

    for name in named:
        visit(name, ())
    plans = []
    for name in order:
        label = f"{config_path} [{name or 'final merge'}]"
        try:
            cfg = parse_config(config_path, named[name], aliases)
        except ValueError as exc:
            raise ValueError(f"{label}: {str(exc).removeprefix(f'{config_path}: ')}") from None
        plans.append((name, outputs[name], cfg))
    return plans
