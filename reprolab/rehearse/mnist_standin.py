"""Stand-in MNIST in both layouts ``reprolab.data.mnist`` accepts: the four IDX files and Keras ``mnist.npz``.

Images are uint8 28 x 28 blobs around a per-class template (so the clustering has structure to find); labels
uint8 0-9. Both layouts hold the same arrays, so either path gives the same Split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from reprolab.data.mnist import _IDX

SHAPES = {"smoke": (600, 200), "full": (60000, 10000)}  # (train, test) images; full = the real MNIST sizes


def _images(n: int, rng: np.random.Generator, templates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 10, n).astype(np.uint8)
    out = np.empty((n, 28, 28), dtype=np.uint8)
    for start in range(0, n, 5000):  # bounded memory at full size
        y = labels[start : start + 5000]
        noise = rng.normal(0.0, 40.0, (len(y), 28, 28))
        out[start : start + 5000] = np.clip(templates[y] + noise, 0, 255).astype(np.uint8)
    return out, labels


def make_mnist_arrays(scale: str, seed: int = 0) -> dict[str, np.ndarray]:
    n_train, n_test = SHAPES[scale]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    centres = rng.uniform(7, 21, (10, 3, 2))  # three strokes per class
    templates = np.zeros((10, 28, 28))
    for c in range(10):
        for cy, cx in centres[c]:
            templates[c] += 255.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 12.0)
    templates = np.clip(templates, 0, 255)
    x_train, y_train = _images(n_train, rng, templates)
    x_test, y_test = _images(n_test, rng, templates)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_mnist(root: Path, scale: str, seed: int = 0) -> tuple[Path, Path]:
    """``root/idx/`` (four IDX files) and ``root/mnist.npz``; returns (idx dir, npz file)."""
    arrays = make_mnist_arrays(scale, seed)
    idx_dir = root / "idx"
    idx_dir.mkdir(parents=True, exist_ok=True)
    key_of = {"X_train": "x_train", "y_train": "y_train", "X_test": "x_test", "y_test": "y_test"}
    for key, stem in _IDX.items():
        _atomic_write(idx_dir / stem, _idx_bytes(arrays[key_of[key]]))
    npz = root / "mnist.npz"
    tmp = root / "mnist.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, npz)
    return idx_dir, npz
