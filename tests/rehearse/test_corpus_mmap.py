"""GTR-sized corpora are memory-mapped, not read whole: bounded peak RSS, same numbers, clear refusals."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reprolab.data.corpus import load_embedded_corpus
from reprolab.rehearse.npzstream import write_npz_streamed

ROWS, DIM = 60_000, 768  # 184 MB of float32 vectors: big enough that a whole read shows in the peak RSS


def _ids(n: int) -> np.ndarray:
    return np.repeat(np.arange(n // 40 + 1, dtype=np.int64), 40)[:n]


def _chunks(n: int, rows: int = 5000):
    rng = np.random.default_rng(0)
    for start in range(0, n, rows):
        yield rng.standard_normal((min(rows, n - start), DIM), dtype=np.float32)


@pytest.fixture(scope="module")
def big_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mmap") / "clean.npz"
    write_npz_streamed(
        path,
        {
            "vectors": ((ROWS, DIM), np.float32, _chunks(ROWS)),
            "article_ids": ((ROWS,), np.int64, [_ids(ROWS)]),
        },
    )
    return path


def test_stored_vectors_are_memory_mapped_and_equal(big_npz: Path) -> None:
    corpus = load_embedded_corpus(big_npz)
    assert isinstance(corpus.vectors, np.memmap) and not corpus.vectors.flags.writeable
    with np.load(big_npz, allow_pickle=False) as z:
        np.testing.assert_array_equal(corpus.vectors[-7:], z["vectors"][-7:])
        np.testing.assert_array_equal(corpus.article_ids, z["article_ids"])


def test_loading_and_one_pass_keep_peak_rss_bounded(big_npz: Path) -> None:
    # A fresh interpreter, so the high-water mark is this load's alone; the old whole read added >= 184 MB.
    script = textwrap.dedent(f"""
        import resource, numpy as np
        from reprolab.data.corpus import load_embedded_corpus
        from reprolab.data.sequences import SequenceSet
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        seqs = SequenceSet.from_corpus(load_embedded_corpus({str(big_npz)!r}), 5)
        total = 0.0
        for start in range(0, len(seqs), 2048):  # one pass over every window, a batch at a time
            ctx, tgt = seqs.gather(slice(start, start + 2048))
            total += float(tgt.sum())
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, total)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    grown_mb, total = map(float, out.stdout.split())
    size_mb = ROWS * DIM * 4 / 2**20
    assert np.isfinite(total)
    assert grown_mb < size_mb / 2, f"peak RSS grew {grown_mb:.0f} MB for a {size_mb:.0f} MB corpus"


def test_large_compressed_vectors_are_refused_small_ones_read(tmp_path: Path) -> None:
    v = np.random.default_rng(1).standard_normal((400, DIM)).astype(np.float32)
    np.savez_compressed(tmp_path / "c.npz", vectors=v, article_ids=_ids(400))
    with pytest.raises(ValueError, match=r"c\.npz: stores vectors compressed .* re-save it uncompressed"):
        load_embedded_corpus(tmp_path / "c.npz", in_memory_limit=2**20)
    np.testing.assert_array_equal(load_embedded_corpus(tmp_path / "c.npz").vectors, v)  # under the limit
    np.savez(tmp_path / "f64.npz", vectors=v.astype(np.float64), article_ids=_ids(400))
    with pytest.raises(ValueError, match="as float64, not float32"):
        load_embedded_corpus(tmp_path / "f64.npz", in_memory_limit=2**20)
    assert load_embedded_corpus(tmp_path / "f64.npz").vectors.dtype == np.float32


def test_truncated_member_is_named(tmp_path: Path) -> None:
    v = np.zeros((50, 4), np.float32)
    np.savez(tmp_path / "t.npz", vectors=v, article_ids=_ids(50))
    raw = bytearray((tmp_path / "t.npz").read_bytes())
    start = raw.index(b"\x93NUMPY")  # the first member's .npy header: promise more rows than are stored
    header_end = raw.index(b"\n", start)
    header = raw[start:header_end].decode("latin1")
    assert "shape" in header
    raw[start:header_end] = header.replace("(50,", "(51,").encode("latin1").ljust(header_end - start)
    (tmp_path / "t.npz").write_bytes(bytes(raw))
    with np.load(tmp_path / "t.npz") as z:
        assert z.files[0] == "vectors"  # np.savez writes members in argument order: the edit hit vectors
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_embedded_corpus(tmp_path / "t.npz")
