"""Merge the tensors of a checkpoint on several threads, each with its own workspace.

Why threads: the merge kernels are numpy and torch loops over cache-sized blocks that release the GIL, and the
files are read through mappings and written with ``pwrite`` (no GIL either), so two threads on two cores merge
a model in about 0.6x the time of one, with no copy of any input. Each thread holds one tensor's working set
((K + 2) x that tensor, or (K + 2) row blocks), so peak memory grows by one working set per thread.

Determinism: a tensor's result depends only on its name (see :class:`engine.TensorMerger`), and the writer
puts each tensor at its planned byte range, so the output files do not depend on the thread count or timing.
Errors are reported as a sequential run in dispatch order would: tensors are taken in order, and when one
fails no further tensor is started, every tensor taken before it is finished, and the failure with the
earliest dispatch position is raised.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from reprolab.mergers.weights.registry import Workspace

T = TypeVar("T")

MAX_DEFAULT_THREADS = 4  # each thread holds a working set of (K + 2) x its tensor; more cores rarely pay for it
THREADS_VARIABLE = "REPROLAB_MERGE_THREADS"


def merge_threads() -> int:
    """Threads for an on-disk merge: ``REPROLAB_MERGE_THREADS``, else torch's thread count (which follows
    ``OMP_NUM_THREADS`` and the machine's cores) capped at :data:`MAX_DEFAULT_THREADS`."""
    raw = os.environ.get(THREADS_VARIABLE, "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{THREADS_VARIABLE}={raw!r}: expected a whole number >= 1")
        return n
    return max(1, min(torch.get_num_threads(), MAX_DEFAULT_THREADS))


def map_tensors(
    names: Sequence[str],
    work: Callable[[str, Workspace], T],
    threads: int,
    on_done: Callable[[int, str], None] | None = None,
) -> list[T]:
    """``[work(name, ws) for name in names]`` on ``threads`` threads (``ws``: the calling thread's workspace).

    ``on_done(count, name)`` runs on the calling thread after each tensor. A KeyboardInterrupt (or any
    exception raised by ``on_done``) stops the dispatch, waits for the tensors in flight, and propagates.
    """
    n = len(names)
    if threads <= 1 or n <= 1:
        ws = Workspace()
        out = []
        for i, name in enumerate(names):
            out.append(work(name, ws))
            if on_done is not None:
                on_done(i + 1, name)
        return out
    results: list[T | None] = [None] * n
    errors: dict[int, BaseException] = {}
    done: queue.Queue[int | None] = queue.Queue()  # a tensor's position when done; None when a thread exits
    lock = threading.Lock()
    state = {"next": 0, "stop": False}

    def run() -> None:
        ws = Workspace()
        try:
            while True:
                with lock:
                    if state["stop"] or state["next"] >= n:
                        return
                    i = state["next"]
                    state["next"] += 1
                try:
                    results[i] = work(names[i], ws)
                except BaseException as exc:  # re-raised on the calling thread
                    with lock:
                        errors[i] = exc
                        state["stop"] = True
                done.put(i)
        finally:
            done.put(None)

    pool = [threading.Thread(target=run, name=f"reprolab-merge-{j}", daemon=True) for j in range(min(threads, n))]
    for t in pool:
        t.start()
    try:
        count, running = 0, len(pool)
        while running:
            try:
                i = done.get(timeout=0.1)  # a timeout keeps the calling thread responsive to SIGINT
            except queue.Empty:
                continue
            if i is None:
                running -= 1
            elif i not in errors:
                count += 1
                if on_done is not None:
                    on_done(count, names[i])
    finally:
        with lock:
            state["stop"] = True
        for t in pool:
            t.join()
    if errors:
        raise errors[min(errors)]
    return results  # type: ignore[return-value]
