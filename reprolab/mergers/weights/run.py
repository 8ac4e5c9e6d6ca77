"""Entry point of ``reprolab merge CONFIG OUT``: parse the YAML config and stream-merge onto disk."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from reprolab.mergers.weights.config import MergeConfig, load_documents, parse_config
from reprolab.mergers.weights.engine import merge_checkpoints
from reprolab.mergers.weights.layout_merge import merge_layout
from reprolab.mergers.weights.multi import plan_documents


class MergeInterrupted(KeyboardInterrupt):
    """SIGTERM during a merge: raised like Ctrl-C so the temporaries are removed on the way out."""


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise MergeInterrupted(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_merge(
    config_path: Path,
    out_dir: Path,
    *,
    show_progress: bool = True,
    overwrite: bool = False,
    intermediate_dir: Path | None = None,
) -> None:
    """Merge the checkpoints a config names into ``out_dir`` (a Hugging Face folder with safetensors weights).

    A multi-document (mergekit-multi) config runs its merges in dependency order, the named ones into
    ``intermediate_dir`` (see :mod:`multi`). Raises ValueError with a message naming the file and field (or
    tensor) on a bad config, bad weights or an unsafe OUT; KeyboardInterrupt (SIGINT, or SIGTERM as
    :class:`MergeInterrupted`) after removing temporaries.
    """
    config_path = Path(config_path)
    docs = load_documents(config_path)
    if len(docs) > 1:
        plans = plan_documents(config_path, docs, Path(out_dir), intermediate_dir)
    else:
        plans = [(None, Path(out_dir), parse_config(config_path))]
    with _sigterm_interrupts():
        for name, out, cfg in plans:
            _merge_one(cfg, out, show_progress=show_progress, overwrite=overwrite, label=name)


def _merge_one(cfg: MergeConfig, out_dir: Path, *, show_progress: bool, overwrite: bool, label: str | None) -> None:
    t0 = time.perf_counter()

    def progress(i: int, n: int, name: str) -> None:
        if show_progress and (i == n or i % max(1, n // 20) == 0):
            print(f"\r[{i}/{n}] {name[:60]:<60}", end="" if i < n else "\n", file=sys.stderr, flush=True)

    try:
        if cfg.needs_layout:
            files = merge_layout(cfg, out_dir, overwrite=overwrite, progress=progress)
        else:
            files = merge_checkpoints(
                cfg.base, cfg.sources, out_dir, cfg.plan,
                compute_dtype=cfg.compute_dtype, out_dtype=cfg.out_dtype, fisher=cfg.fisher,
                allow_source_as_base=cfg.allow_source_as_base, allow_pickle=cfg.allow_pickle,
                max_shard_bytes=cfg.max_shard_bytes, progress=progress, overwrite=overwrite,
                native_arithmetic=cfg.native_arithmetic,
            )
    except OSError as exc:  # a full disk, a read-only or vanished folder: one line, no traceback
        where = exc.filename or out_dir
        raise ValueError(f"{where}: {exc.strerror or exc} (the merge's temporary files were removed)") from None
    except ValueError as exc:
        raise ValueError(f"[{label}] {exc}" if label else str(exc)) from None
    if show_progress:
        print(f"merged {len(cfg.sources)} model(s) with {cfg.method}{f' ({label})' if label else ''} into "
              f"{out_dir}: {', '.join(f.name for f in files)} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
