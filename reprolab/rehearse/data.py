"""Where a rehearsal's stand-in data lives, and which environment variable points at what.

Layout of a data folder (the one ``reprolab rehearse --data DIR`` reuses): ``mnist/idx/`` (four IDX files) and
``mnist/mnist.npz``, ``gtr/{clean,diluted}.npz``, ``massive/models/`` and ``massive/data/``. A data set whose
folder has a ``.complete`` marker for the same scale is reused; one without is generated (never over a
folder that holds anything else: a user's own data is never overwritten).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from reprolab.rehearse.gtr_standin import write_gtr
from reprolab.rehearse.massive_standin import write_massive
from reprolab.rehearse.mnist_standin import write_mnist

MARKER = ".complete"


def _mnist(root: Path, scale: str) -> dict[str, str]:
    idx_dir, _npz = (root / "idx", root / "mnist.npz")
    if not (root / MARKER).is_file():
        idx_dir, _npz = write_mnist(root, scale)
    return {"REPROLAB_MNIST": str(idx_dir)}


def _gtr(root: Path, scale: str) -> dict[str, str]:
    if not (root / MARKER).is_file():
        write_gtr(root, scale)
    return {"REPROLAB_LVM_GTR_DIR": str(root)}


def _massive(root: Path, scale: str) -> dict[str, str]:
    models, data = root / "models", root / "data"
    if not (root / MARKER).is_file():
        models, data = write_massive(root, scale)
    return {"REPROLAB_MASSIVE_MODELS": str(models), "REPROLAB_MASSIVE_DATA": str(data)}


# data set -> (sub-folder, the variables it provides, generator)
DATASETS: dict[str, tuple[str, tuple[str, ...], Callable[[Path, str], dict[str, str]]]] = {
    "mnist": ("mnist", ("REPROLAB_MNIST",), _mnist),
    "gtr": ("gtr", ("REPROLAB_LVM_GTR_DIR",), _gtr),
    "massive": ("massive", ("REPROLAB_MASSIVE_MODELS", "REPROLAB_MASSIVE_DATA"), _massive),
}


def datasets_for(variables: Iterable[str]) -> list[str]:
    """The data sets that provide ``variables`` (unknown variables are the caller's error to report)."""
    wanted = set(variables)
    return [name for name, (_sub, provides, _gen) in DATASETS.items() if wanted & set(provides)]


def unknown_variables(variables: Iterable[str]) -> list[str]:
    known = {v for _sub, provides, _gen in DATASETS.values() for v in provides}
    return sorted(set(variables) - known)


def prepare(root: Path, scale: str, names: Iterable[str]) -> dict[str, str]:
    """Generate (or reuse) each named data set under ``root``; returns the environment to point claims at it."""
    env: dict[str, str] = {}
    for name in names:
        sub, _provides, generate = DATASETS[name]
        folder = root / sub
        marker = folder / MARKER
        if marker.is_file():
            recorded = json.loads(marker.read_text()).get("scale")
            if recorded != scale:
                raise ValueError(
                    f"{folder} holds {recorded}-scale stand-in data, not {scale}: use another --data"
                )
        elif folder.exists() and any(folder.iterdir()):
            raise ValueError(
                f"{folder} exists and is not stand-in data from `reprolab rehearse`; not overwriting it"
            )
        env.update(generate(folder, scale))
        if not marker.is_file():
            marker.write_text(json.dumps({"scale": scale}))
    return env
