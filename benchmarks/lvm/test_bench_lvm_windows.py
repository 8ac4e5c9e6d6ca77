"""One shuffled pass of training-batch gathering over 726,014 x 768 float32 vectors memory-mapped from disk.

The index-based ``SequenceSet`` keeps only the window index; each batch of 512 windows (5 context rows + the
target) is gathered from an ``np.load(..., mmap_mode="r")`` array on the fly. Materialising every window, as
the old ``SequenceSet.arrays()`` did, would take ~11 GB here. Target: peak RSS under ~1.5 GB, measured from
``VmHWM`` in a fresh interpreter (this file run as a script), so nothing the test process holds is counted.

    nice pytest benchmarks/lvm/test_bench_lvm_windows.py -m benchmark --benchmark-only -s
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from reprolab.data.corpus import EmbeddedCorpus
from reprolab.data.sequences import SequenceSet

N_ROWS, DIM, CONTEXT, BATCH = 726_014, 768, 5, 512


def write_corpus(folder: Path, *, seed: int = 0, block: int = 16_384) -> tuple[Path, Path]:
    """``vectors.npy`` (unit rows, written block by block: never whole in memory) and ``article_ids.npy``
    (articles of 1-40 chunks, so some are shorter than the context and give no window)."""
    rng = np.random.default_rng(seed)
    vec_path, ids_path = folder / "vectors.npy", folder / "article_ids.npy"
    out = np.lib.format.open_memmap(vec_path, mode="w+", dtype=np.float32, shape=(N_ROWS, DIM))
    for start in range(0, N_ROWS, block):
        x = rng.standard_normal((min(block, N_ROWS - start), DIM), dtype=np.float32)
        out[start : start + x.shape[0]] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out
    lengths = rng.integers(1, 41, size=N_ROWS)  # more than enough articles; cut at N_ROWS rows
    ids = np.repeat(np.arange(lengths.size), lengths)[:N_ROWS]
    np.save(ids_path, ids)
    return vec_path, ids_path


def open_windows(vec_path: Path, ids_path: Path) -> SequenceSet:
    vectors = np.load(vec_path, mmap_mode="r")
    return SequenceSet.from_corpus(EmbeddedCorpus(vectors, np.load(ids_path), name="bench"), CONTEXT)


def gather_pass(windows: SequenceSet, order: np.ndarray) -> float:
    """Gather every window once in ``order``, batch by batch, as the trainer does; returns a checksum so that
    the copies cannot be skipped."""
    total = 0.0
    for ctx, tgt in windows.batches(BATCH, order):
        total += float(ctx[:, -1, 0].sum() + tgt[:, 0].sum())
    return total


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1])


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lvm_windows")
    paths = write_corpus(folder)
    yield paths
    for p in paths:
        p.unlink(missing_ok=True)  # 2.2 GB: never leave it behind


def _fresh_process_memory(vec_path: Path, ids_path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, str(vec_path), str(ids_path)], capture_output=True, text=True,
                         check=True)
    fields = dict(item.split("=") for item in out.stdout.strip().splitlines()[-1].split())
    return {k: int(v) / 1024.0 for k, v in fields.items()}  # kB -> MB


@pytest.mark.benchmark
def test_bench_gather_pass_on_memmap(benchmark, corpus_files):
    windows = open_windows(*corpus_files)
    order = np.random.default_rng(0).permutation(len(windows))
    benchmark.pedantic(gather_pass, args=(windows, order), rounds=2, iterations=1, warmup_rounds=1)
    seconds = benchmark.stats.stats.min
    gathered_gb = len(windows) * (CONTEXT + 1) * DIM * 4 / 1e9
    mem = _fresh_process_memory(*corpus_files)
    materialised_gb = len(windows) * (CONTEXT + 1) * DIM * 4 / 2**30
    benchmark.extra_info.update(windows=len(windows), windows_per_s=len(windows) / seconds,
                                gathered_gb_per_s=gathered_gb / seconds, materialised_gib=materialised_gb, **mem)
    print(f"\ngather pass: {len(windows):,} windows (batch {BATCH}) in {seconds:.2f} s best = "
          f"{len(windows) / seconds:,.0f} windows/s ({gathered_gb / seconds:.2f} GB/s copied); fresh process: "
          f"peak RSS {mem['VmHWM']:.0f} MB (anon {mem['RssAnon']:.0f} MB, file-backed {mem['RssFile']:.0f} MB "
          f"at the end); materialised windows would be {materialised_gb:.1f} GiB")
    assert len(windows) > 0.8 * N_ROWS * 0.5
    assert mem["VmHWM"] < 1536, f"peak RSS {mem['VmHWM']:.0f} MB is over ~1.5 GB"


if __name__ == "__main__":  # the fresh interpreter of _fresh_process_memory
    ws = open_windows(Path(sys.argv[1]), Path(sys.argv[2]))
    t0 = time.perf_counter()
    gather_pass(ws, np.random.default_rng(0).permutation(len(ws)))
    os.write(2, f"pass {time.perf_counter() - t0:.2f} s\n".encode())
    print(" ".join(f"{k}={status_kb(k)}" for k in ("VmHWM", "RssAnon", "RssFile")))
