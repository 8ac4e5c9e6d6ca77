"""Entry point of ``reprolab merge CONFIG OUT``: parse the YAML config and stream-merge onto disk."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from reprolab.mergers.weights.config import parse_config
from reprolab.mergers.weights.engine import merge_checkpoints


def run_merge(config_path: Path, out_dir: Path, *, show_progress: bool = True) -> None:
    """Merge the checkpoints a config names into ``out_dir`` (a Hugging Face folder with safetensors weights).

    Raises ValueError with a message naming the file and field (or tensor) on a bad config or bad weights.
    """
    cfg = parse_config(Path(config_path))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output {out_dir} exists and is not a folder")
    t0 = time.perf_counter()

    def progress(i: int, n: int, name: str) -> None:
        if show_progress and (i == n or i % max(1, n // 20) == 0):
            print(f"\r[{i}/{n}] {name[:60]:<60}", end="" if i < n else "\n", file=sys.stderr, flush=True)

    files = merge_checkpoints(
        cfg.base, cfg.sources, out_dir, cfg.plan,
        compute_dtype=cfg.compute_dtype, out_dtype=cfg.out_dtype, fisher=cfg.fisher,
        allow_source_as_base=cfg.allow_source_as_base, allow_pickle=cfg.allow_pickle,
        max_shard_bytes=cfg.max_shard_bytes, progress=progress,
    )
    if show_progress:
        print(f"merged {len(cfg.sources)} model(s) with {cfg.method} into {', '.join(f.name for f in files)} "
              f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
