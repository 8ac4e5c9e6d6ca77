"""What the machine offers a claim (CUDA, data paths) and what a run records about the machine.

The CUDA probe imports a framework (torch or JAX, whichever the claim's experiment runs on) only when a
selected gpu claim reaches the hardware check, so collection and the engine itself stay light.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
from datetime import UTC, datetime
from functools import cache
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


# The array library each research line's experiments run on (keyed by the experiment name's first part): a
# gpu claim is checked against *its* framework's backend, since torch seeing a GPU says nothing about JAX's.
FRAMEWORK = {"clustering": "jax", "lvm": "torch", "merging": "torch"}


def framework_of(experiment: str) -> str | None:
    """``"jax"`` or ``"torch"`` for the suite's lines; None for an experiment of unknown lineage."""
    return FRAMEWORK.get(experiment.split(".", 1)[0])


def backend(framework: str) -> str:
    """``"cuda"`` when ``framework`` (``"jax"`` or ``"torch"``) runs on a CUDA device here, else its CPU
    backend's name (``"cpu"``), or ``"absent"`` when it is not installed. Imports the framework (only here, and
    only when a gpu claim asks); ``REPROLAB_NO_CUDA=1`` answers ``"cpu"`` without importing anything."""
    if os.environ.get("REPROLAB_NO_CUDA") == "1":
        return "cpu"
    return _probe(framework)


@cache
def _probe(framework: str) -> str:
    if importlib.util.find_spec(framework) is None:
        return "absent"
    if framework == "torch":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if framework == "jax":
        import jax

        name = jax.default_backend()  # "gpu" for CUDA (and ROCm) builds, "cpu" for jax[cpu]
        return "cuda" if name == "gpu" else name
    raise ValueError(f"unknown framework {framework!r} (expected 'jax' or 'torch')")


def cuda_available(framework: str | None = None) -> bool:
    """True when ``framework``'s backend is CUDA; with None (an experiment of unknown lineage), when either
    torch's or JAX's is."""
    frameworks = (framework,) if framework else ("torch", "jax")
    return any(backend(f) == "cuda" for f in frameworks)


REHEARSAL_ENV = (
    "REPROLAB_REHEARSAL"  # set by `reprolab rehearse`: gpu claims run on CPU to exercise code paths
)


def skip_reason(claim: Claim) -> str | None:
    """Why ``claim`` cannot run here, or None. Data requirements are checked before hardware (cheaper), and
    the hardware check asks only the framework the claim's experiment runs on."""
    for variable in claim.requires:
        value = os.environ.get(variable)
        if not value:
            return f"needs data: set {variable} to its local path (see docs)"
        if not Path(value).exists():
            return f"needs data: {variable}={value} does not exist"
    if claim.scale != "gpu" or os.environ.get(REHEARSAL_ENV) == "1":
        return None
    framework = framework_of(claim.experiment)
    if cuda_available(framework):
        return None
    if framework is None:
        return "gpu claim: no CUDA device here (neither torch nor JAX has a CUDA backend)"
    return f"gpu claim: no CUDA device here ({framework}'s backend is {backend(framework)})"


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
