"""What the machine offers a claim (CUDA, data paths) and what a run records about the machine.

The CUDA probe imports torch (or JAX) only when a gpu claim asks, so the engine itself stays light.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from reprolab.claims.schema import Claim

# Packages whose versions can change a claim's numbers; recorded with every run.
TRACKED_PACKAGES = (
    "reprolab",
    "numpy",
    "scipy",
    "scikit-learn",
    "jax",
    "jaxlib",
    "torch",
    "faiss-cpu",
    "transformers",
)


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True when torch or JAX sees a CUDA device. ``REPROLAB_NO_CUDA=1`` forces False (for tests)."""
    if os.environ.get("REPROLAB_NO_CUDA") == "1":
        return False
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return True
    if importlib.util.find_spec("jax") is not None:
        import jax

        try:
            return bool(jax.devices("gpu"))
        except RuntimeError:
            return False
    return False


REHEARSAL_ENV = "REPROLAB_REHEARSAL"  # set by `reprolab rehearse`: gpu claims run on CPU to exercise code paths


def skip_reason(claim: Claim) -> str | None:
    """Why ``claim`` cannot run here, or None. Data requirements are checked before hardware (cheaper)."""
    for variable in claim.requires:
        value = os.environ.get(variable)
        if not value:
            return f"needs data: set {variable} to its local path (see docs)"
        if not Path(value).exists():
            return f"needs data: {variable}={value} does not exist"
    if claim.scale == "gpu" and not cuda_available() and os.environ.get(REHEARSAL_ENV) != "1":
        return "gpu claim: no CUDA device here"
    return None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def machine_description() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu python {platform.python_version()}"


def _git(*args: str, cwd: Path | None = None) -> str | None:
    """stdout of a git command, or None when git is missing, fails, or this is not a checkout."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_revision(cwd: Path | None = None) -> str | None:
    """HEAD's hash, with ``-dirty`` when tracked files differ from it; None outside a git checkout."""
    rev = _git("rev-parse", "HEAD", cwd=cwd)
    if not rev:
        return None
    dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return rev + ("-dirty" if dirty else "")


def revision_date(rev: str, cwd: Path | None = None) -> str | None:
    """The commit time of ``rev`` (ISO 8601, UTC) when it names a commit here, else None."""
    committed = _git("show", "-s", "--format=%cI", f"{rev}^{{commit}}", cwd=cwd)
    if not committed:
        return None
    return datetime.fromisoformat(committed).astimezone(UTC).isoformat(timespec="seconds")
