"""Portable numerics: the same seed gives the same bits on any x86-64 CPU with AVX2, not only on one model.

torch (ATen kernels, MKL, oneDNN), NumPy's OpenBLAS and XLA pick their CPU kernels at run time by the widest
instruction set the machine has. An AVX-512 machine therefore sums in another order than an AVX2 one, the last
bits differ, and a chaotic training amplifies them: on the merging line a world rebuilt on an AMD EPYC (AVX2)
differs from the one recorded on an AVX-512 machine from pretraining step 1 (7th digit), and five recorded
verdicts flipped. Experiment workers therefore start with every library held to its AVX2 code path. On an AVX2
machine that is what they pick anyway (checked bit for bit: ATen, MKL, OpenBLAS and XLA give identical results
with and without the pins), so the pins cost nothing there; an AVX-512 machine gives up its wider kernels.

A variable the user set is never overridden, ``[tool.reprolab] portable_numerics = false`` turns the pins off,
and machines without AVX2 and FMA, or not x86-64, get none (the pins would name kernels they cannot run).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

# One kernel family per library, all AVX2 + FMA (x86-64-v3).
PINS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility: the AVX2 branch on any vendor's CPU
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # torch's oneDNN (mkldnn) primitives
    "OPENBLAS_CORETYPE": "Haswell",  # NumPy/SciPy's OpenBLAS (DYNAMIC_ARCH) kernels
}
XLA_FLAG = "--xla_cpu_max_isa=AVX2"  # JAX's CPU backend: the widest vectors its compiler may emit
# Thread pools of the numeric libraries, read when they load: one compute thread per worker (executor.py says why).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@lru_cache(maxsize=1)
def _this_cpuinfo() -> str:
    """This machine's ``/proc/cpuinfo`` ("" off x86-64 or where it cannot be read), read once per process."""
    if platform.machine().lower() not in {"x86_64", "amd64"}:
        return ""
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_supports_pins(cpuinfo: str | None = None) -> bool:
    """True on an x86-64 CPU with AVX2 and FMA (read from ``/proc/cpuinfo``; other systems: False)."""
    if cpuinfo is None:
        cpuinfo = _this_cpuinfo()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return {"avx2", "fma"} <= flags
    return False


def portable_env(environ: Mapping[str, str], *, supported: bool | None = None) -> dict[str, str]:
    """The variables to add to ``environ`` for a worker (none that ``environ`` already sets)."""
    if not (cpu_supports_pins() if supported is None else supported):
        return {}
    extra = {key: value for key, value in PINS.items() if key not in environ}
    flags = environ.get("XLA_FLAGS", "")
    if "--xla_cpu_max_isa" not in flags:
        extra["XLA_FLAGS"] = f"{flags} {XLA_FLAG}".strip()
    return extra


def worker_env(environ: Mapping[str, str], *, portable: bool = True) -> dict[str, str]:
    """What a worker starts with besides ``environ``: one compute thread, and the pins when ``portable``."""
    extra = {name: "1" for name in THREAD_VARIABLES if name not in environ}
    return {**extra, **(portable_env(environ) if portable else {})}


@contextmanager
def worker_environ(
    portable: bool = True, environ: MutableMapping[str, str] = os.environ
) -> Iterator[dict[str, str]]:
    """Apply :func:`worker_env` to ``environ`` for the duration (a spawned worker inherits it), then restore it.
    Set in the parent while the worker starts, not in the worker: a spawned child imports the parent's main
    module (the ``reprolab`` CLI imports numpy) before it runs any code of ours, and OpenBLAS reads its
    variables when it loads."""
    extra = worker_env(environ, portable=portable)
    saved = {key: environ.get(key) for key in extra}
    environ.update(extra)
    try:
        yield extra
    finally:
        for key, value in saved.items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
