"""Data loaders: digits split and MNIST from a local npz file or IDX directory."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from reprolab.data.digits import load_digits_split
from reprolab.data.mnist import ENV_VAR, load_mnist, read_idx


def test_digits_split_is_deterministic_and_scaled():
    a, b = load_digits_split(), load_digits_split()
    assert a.X_train.shape == (1438, 64) and a.X_test.shape == (359, 64)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)
    assert a.X_train.min() >= 0.0 and a.X_train.max() <= 1.0
    assert not np.array_equal(load_digits_split(split_seed=1).y_test, a.y_test)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(test_fraction=1.5)


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _fake(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def test_mnist_from_npz_and_env(tmp_path, monkeypatch):
    xtr, ytr = _fake(6, 0)
    xte, yte = _fake(3, 1)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    monkeypatch.setenv(ENV_VAR, str(path))
    split = load_mnist()
    assert split.X_train.shape == (6, 784) and split.X_test.shape == (3, 784)
    assert np.allclose(split.X_train * 255, xtr.reshape(6, -1))
    assert split.y_test.dtype == np.int64


def test_mnist_from_idx_directory(tmp_path):
    xtr, ytr = _fake(5, 2)
    xte, yte = _fake(4, 3)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(xtr)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(ytr))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(xte))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(yte))
    split = load_mnist(tmp_path)
    assert np.array_equal(split.y_train, ytr) and split.X_test.shape == (4, 784)


def test_mnist_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=ENV_VAR):
        load_mnist()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_mnist(tmp_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((1, 28, 28)))
    with pytest.raises(ValueError, match="lacks arrays"):
        load_mnist(bad)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        read_idx(junk)
