"""Trainer determinism, progress, safetensors checkpoints, baselines; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprolab.models.lvm.baselines import baseline_scores, mean_cosine
from reprolab.models.lvm.losses import LossWeights
from reprolab.models.lvm.models import build_model
from reprolab.models.lvm.trainer import (
    TrainConfig,
    evaluate,
    fit,
    load_checkpoint,
    predict,
    save_checkpoint,
    seeded_model,
)

KW = {"attn_dim": 8, "hidden": (16, 8)}


def _data(n: int = 64, d: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal((n + 5, d)), axis=0).astype(np.float32)
    walk /= np.linalg.norm(walk, axis=1, keepdims=True)
    ctx = np.stack([walk[i : i + 5] for i in range(n)])
    return ctx, walk[5 : n + 5]


def _train(seed: int, **cfg):
    ctx, tgt = _data()
    model = seeded_model("amn", 12, seed, **KW)
    config = TrainConfig(epochs=2, batch_size=16, **cfg)
    return fit(model, (ctx[:48], tgt[:48]), (ctx[48:], tgt[48:]), config, seed)


def test_same_seed_same_weights_and_history():
    a, b = _train(3), _train(3)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert [r.val_cosine for r in a.history] == [r.val_cosine for r in b.history]
    c = _train(4)
    assert not torch.equal(next(iter(a.model.state_dict().values())), next(iter(c.model.state_dict().values())))


def test_progress_called_each_epoch_and_losses_logged():
    seen = []
    ctx, tgt = _data()
    model = seeded_model("amn", 12, 0, **KW)
    fit(model, (ctx[:48], tgt[:48]), (ctx[48:], tgt[48:]),
        TrainConfig(epochs=3, batch_size=16, loss=LossWeights(0.5, 0.5, 1e-3, 1e-3)), 0, progress=seen.append)
    assert [r.epoch for r in seen] == [1, 2, 3]
    assert set(seen[0].terms) == {"mse", "info", "moment", "variance"}
    assert all(np.isfinite(r.train_loss) and r.samples_per_second > 0 for r in seen)


def test_checkpoint_roundtrip(tmp_path):
    res = _train(0)
    save_checkpoint(res.model, tmp_path / "m.safetensors", kind="amn", **KW)
    back = load_checkpoint(tmp_path / "m.safetensors")
    ctx, tgt = _data()
    assert evaluate(back, ctx, tgt) == pytest.approx(evaluate(res.model, ctx, tgt), abs=1e-7)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="not a reprolab LVM checkpoint"):
        load_checkpoint(tmp_path / "bare.safetensors")


@pytest.mark.parametrize(
    "meta,match",
    [
        (None, "not a readable safetensors file"),  # garbage bytes
        ({"kind": "nope", "dim": "8"}, "cannot rebuild the 'nope' model"),
        ({"kind": "amn", "dim": "x"}, "metadata dim/kwargs unreadable"),
        ({"kind": "amn", "dim": "8", "kwargs": "{bad"}, "metadata dim/kwargs unreadable"),
        ({"kind": "amn", "dim": "8", "kwargs": "[1, 2]"}, "kwargs must be a JSON object"),
        ({"kind": "amn", "dim": "8", "kwargs": '{"zzz": 1}'}, "cannot rebuild the 'amn' model"),
        ({"kind": "amn", "dim": "9"}, "weights do not fit the model"),
    ],
)
def test_a_bad_checkpoint_is_one_value_error_naming_the_file(tmp_path, meta, match):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    if meta is None:
        path.write_bytes(b"garbage bytes")
    else:
        model = build_model("amn", 8)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    with pytest.raises(ValueError, match=match) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_bad_training_input():
    ctx, tgt = _data()
    bad = ctx.copy()
    bad[3, 2, 1] = np.nan
    model = seeded_model("amn", 12, 0, **KW)
    with pytest.raises(ValueError, match="train_contexts contains NaN"):
        fit(model, (bad, tgt), (ctx, tgt), TrainConfig(epochs=1), 0)
    with pytest.raises(ValueError, match="do not match"):
        fit(model, (ctx, tgt[:-1]), (ctx, tgt), TrainConfig(epochs=1), 0)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=1)


def test_baselines_on_a_smooth_walk():
    ctx, tgt = _data(400)
    s = baseline_scores((ctx, tgt), tgt, seed=0)
    assert abs(s["random"]) < 0.1
    assert s["copy_last"] > s["global_mean"]
    assert s["mean_of_context"] > 0.3
    with pytest.raises(ValueError, match="zero vector"):
        mean_cosine(np.zeros((2, 3)), np.ones((2, 3)))


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"epochs": 2.5}, TypeError),
        ({"batch_size": True}, TypeError),
        ({"epochs": 0}, ValueError),
        ({"lr": float("nan")}, ValueError),
        ({"lr": float("inf")}, ValueError),
        ({"weight_decay": -0.1}, ValueError),
        ({"plateau_factor": 1.0}, ValueError),
        ({"plateau_patience": -1}, ValueError),
        ({"grad_clip": float("nan")}, ValueError),
        ({"lr": "a"}, TypeError),  # used to be Python's "'<' not supported between 'int' and 'str'"
        ({"weight_decay": "0"}, TypeError),
        ({"plateau_factor": None}, TypeError),
        ({"grad_clip": "1"}, TypeError),
    ],
)
def test_train_config_refuses_values_that_would_fail_late_or_train_silently_on_nan(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        TrainConfig(**kwargs)


def test_no_windows_is_one_error_naming_the_argument_never_a_nan_mean():
    ctx, tgt = _data()
    model = seeded_model("amn", 12, 0, **KW)
    with pytest.raises(ValueError, match="windows: no windows"):
        evaluate(model, ctx[:0], tgt[:0])
    with pytest.raises(ValueError, match="contexts: no windows"):
        predict(model, ctx[:0])
    with pytest.raises(ValueError, match="val: no windows"):
        fit(model, (ctx, tgt), (ctx[:0], tgt[:0]), TrainConfig(epochs=1), 0)
    with pytest.raises(ValueError, match="windows: no windows"):
        baseline_scores((ctx[:0], tgt[:0]), tgt, seed=0)


def test_a_seed_or_config_of_the_wrong_type_is_one_error_naming_it():
    ctx, tgt = _data()
    model = seeded_model("amn", 12, 0, **KW)
    for seed in ("0", 1.5, None):
        with pytest.raises(TypeError, match="seed must be an integer"):
            fit(model, (ctx, tgt), (ctx, tgt), TrainConfig(epochs=1), seed)
        with pytest.raises(TypeError, match="seed must be an integer"):
            seeded_model("amn", 12, seed, **KW)
    with pytest.raises(TypeError, match=r"TrainConfig\.loss must be a LossWeights"):
        TrainConfig(loss={"lambda_mse": 1.0})
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        fit(model, (ctx, tgt), (ctx, tgt), {"epochs": 1}, 0)


def test_baseline_train_targets_are_checked_where_they_are_named():
    ctx, tgt = _data()
    assert baseline_scores((ctx, tgt), tgt.tolist(), seed=0) == baseline_scores((ctx, tgt), tgt, seed=0)
    with pytest.raises(ValueError, match="train_targets must be a non-empty"):
        baseline_scores((ctx, tgt), tgt[:0], seed=0)
    nan = tgt.copy()
    nan[2, 3] = np.nan
    with pytest.raises(ValueError, match="train_targets must be finite"):
        baseline_scores((ctx, tgt), nan, seed=0)


def test_train_config_refuses_an_unavailable_or_unknown_device():
    # cuda:7 on a host without it used to be accepted and fail later inside torch (AssertionError / CUDA error).
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=rf"TrainConfig.device: 'cuda:{n}' is not available on this host"):
        TrainConfig(device=f"cuda:{n}")
    with pytest.raises(ValueError, match=r"TrainConfig.device: 'gpu0' is not a torch device"):
        TrainConfig(device="gpu0")
    assert TrainConfig(device="cpu").device == "cpu"
