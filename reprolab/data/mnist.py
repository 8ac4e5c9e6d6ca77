"""MNIST from a local path (gpu-tier claims only; nothing is downloaded).

``REPROLAB_MNIST`` names either
- an ``.npz`` file with arrays ``x_train`` (60000, 28, 28) uint8, ``y_train`` (60000,), ``x_test``
  (10000, 28, 28), ``y_test`` (10000,) (the Keras ``mnist.npz`` layout), or
- a directory with the four original IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``).
Images are flattened to 784 features scaled to [0, 1].
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from reprolab.data.digits import Split

ENV_VAR = "REPROLAB_MNIST"
_IDX = {
    "X_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "X_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> NDArray[np.uint8]:
    """Parse one IDX file (magic 0x0000080D: unsigned bytes, D dims, big-endian sizes)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory} has no {stem}[.gz] (see reprolab.data.mnist for the layout)")


def _finish(images: NDArray, labels: NDArray, name: str) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    if images.ndim < 2 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST {name}: {images.shape[0]} images but {labels.shape[0]} labels")
    return (images.reshape(images.shape[0], -1) / 255.0).astype(np.float32), labels.astype(np.int64)


def load_mnist(path: str | os.PathLike[str] | None = None) -> Split:
    """Load MNIST from ``path`` or, when None, from ``$REPROLAB_MNIST``."""
    if path is None:
        path = os.environ.get(ENV_VAR)
        if not path:
            raise FileNotFoundError(f"set {ENV_VAR} to an mnist.npz file or a directory of IDX files")
    p = Path(path)
    if p.is_file():
        with np.load(p) as z:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(z.files)
            if missing:
                raise ValueError(f"{p} lacks arrays {sorted(missing)}")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        xtr, ytr = _finish(arrays["x_train"], arrays["y_train"], "train")
        xte, yte = _finish(arrays["x_test"], arrays["y_test"], "test")
        return Split(xtr, ytr, xte, yte)
    if p.is_dir():
        loaded = {key: read_idx(_find_idx(p, stem)) for key, stem in _IDX.items()}
        xtr, ytr = _finish(loaded["X_train"], loaded["y_train"], "train")
        xte, yte = _finish(loaded["X_test"], loaded["y_test"], "test")
        return Split(xtr, ytr, xte, yte)
    raise FileNotFoundError(f"{ENV_VAR} path {p} does not exist")
