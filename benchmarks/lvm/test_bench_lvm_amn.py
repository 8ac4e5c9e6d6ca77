"""Throughput of one AMN training epoch: 100,000 sequences, d = 768, context 5, batch 512 (CPU here).

    pytest benchmarks/lvm/test_bench_lvm_amn.py -m benchmark --benchmark-only -s
"""

from __future__ import annotations

import numpy as np
import pytest

from reprolab.models.lvm.losses import LossWeights
from reprolab.models.lvm.trainer import TrainConfig, fit, seeded_model

N_SEQ, DIM, CONTEXT, BATCH = 100_000, 768, 5, 512


@pytest.mark.benchmark
def test_bench_amn_epoch_throughput(benchmark):
    rng = np.random.default_rng(0)
    ctx = rng.standard_normal((N_SEQ, CONTEXT, DIM), dtype=np.float32)
    ctx /= np.linalg.norm(ctx, axis=-1, keepdims=True)
    tgt = ctx.mean(axis=1)
    tgt /= np.linalg.norm(tgt, axis=-1, keepdims=True)
    config = TrainConfig(epochs=1, batch_size=BATCH, loss=LossWeights(0.5, 0.5, 1e-3, 1e-3))

    def one_epoch():
        model = seeded_model("amn", DIM, 0)
        return fit(model, (ctx, tgt), (ctx[:1024], tgt[:1024]), config, 0)

    result = benchmark.pedantic(one_epoch, rounds=2, iterations=1)
    record = result.history[0]
    benchmark.extra_info.update(samples_per_second=record.samples_per_second, epoch_seconds=record.seconds)
    print(f"\nAMN d=768 batch {BATCH}: {record.samples_per_second:,.0f} samples/s ({record.seconds:.1f} s per epoch)")
    assert np.isfinite(record.train_loss)
