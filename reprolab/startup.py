"""Heavy imports with Python's cyclic garbage collector paused.

Why: importing torch (or JAX) creates a few hundred thousand objects, and the collector's passes over them while
they are being created cost 0.2-0.45 s of the ~3.5 s ``import torch`` takes on this project's 2-core machine (6-10%,
measured alternating with and without). Afterwards the new objects are frozen (``gc.freeze``): modules, functions
and classes that live as long as the process, which later full collections need not walk again. Results are
unaffected; only when the collector runs changes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_collector() -> Iterator[None]:
    """Pause the cyclic collector for the block, then freeze what survived it and resume (if it was on)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
