"""Semantics of each merge method on small hand-checkable tensors."""

from __future__ import annotations

import pytest
import torch

from reprolab.mergers.weights import (
    get_method,
    list_methods,
    merge_state_dicts,
    merge_tensors,
    save_state_dict,
)
from reprolab.mergers.weights.methods import is_neuronal
from reprolab.mergers.weights.sparsify import dare_drop, global_thresholds, magnitude_mask, rank_band_mask


def test_registry_lists_every_method_and_rejects_unknown():
    names = set(list_methods())
    assert {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "fisher", "directional_consensus",
            "neuromerging"} <= names
    with pytest.raises(ValueError, match="unknown merge method 'slerpy'"):
        get_method("slerpy")
    with pytest.raises(ValueError, match="unknown parameter"):
        merge_tensors("ties", torch.zeros(3), [torch.ones(3)], densty=0.5)


def test_linear_is_weighted_average():
    out = merge_tensors("linear", None, [torch.tensor([0.0, 2.0]), torch.tensor([4.0, 6.0])], [1.0, 3.0])
    assert torch.allclose(out, torch.tensor([3.0, 5.0]))


def test_task_arithmetic_adds_scaled_weighted_sum():
    base = torch.tensor([1.0, 1.0])
    out = merge_tensors("task_arithmetic", base, [torch.tensor([2.0, 1.0]), torch.tensor([1.0, 3.0])], [1.0, 0.5],
                        **{"lambda": 2.0})
    assert torch.allclose(out, base + 2.0 * (torch.tensor([1.0, 0.0]) + 0.5 * torch.tensor([0.0, 2.0])))


def test_ties_trim_elect_disjoint_mean_by_hand():
    base = torch.zeros(4)
    a = torch.tensor([3.0, -1.0, 0.1, 2.0])
    b = torch.tensor([-1.0, -2.0, 0.2, -4.0])
    out = merge_tensors("ties", base, [a, b], [1.0, 1.0], density=0.5)
    # trim: a keeps {3, 2}, b keeps {-2, -4}; elect: [+, -, +(tie 0 -> +), -]; disjoint mean of agreeing entries
    assert torch.allclose(out, torch.tensor([3.0, -2.0, 0.0, -4.0]))


def test_ties_global_trim_uses_one_threshold_over_the_model():
    base = {"a": torch.zeros(4), "b": torch.zeros(4)}
    src = {"a": torch.tensor([5.0, 4.0, 3.0, 2.0]), "b": torch.tensor([0.1, 0.2, 0.3, 0.4])}
    per_tensor = merge_state_dicts(base, [src], "ties", params={"density": 0.5})
    whole = merge_state_dicts(base, [src], "ties", params={"density": 0.5, "trim_scope": "model"})
    assert torch.count_nonzero(per_tensor["b"]) == 2
    assert torch.count_nonzero(whole["b"]) == 0 and torch.equal(whole["a"], src["a"])


def test_global_thresholds_keep_exactly_k():
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(2, 1000, generator=g), torch.randn(2, 37, 11, generator=g)]
    th = global_thresholds(lambda: iter(tensors), [0.2, 0.5])
    for i, d in enumerate([0.2, 0.5]):
        allv = torch.cat([t[i].reshape(-1).abs() for t in tensors])
        assert int((allv >= th[i]).sum()) == int(d * allv.numel())


def test_magnitude_mask_exact_count_and_min_one():
    x = torch.arange(10.0) - 4.5
    assert int(magnitude_mask(x, 0.3).sum()) == 3
    assert int(magnitude_mask(torch.ones(3), 0.1).sum()) == 1


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_density_outside_unit_interval_is_an_error(bad):
    with pytest.raises(ValueError, match="density"):
        merge_tensors("ties", torch.zeros(3), [torch.ones(3)], density=bad)


def test_dare_rescales():
    x = torch.randn(10000, generator=torch.Generator().manual_seed(1))
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    paper = dare_drop(x, 0.1, rescale="paper", generator=g())
    l1 = dare_drop(x, 0.1, rescale="l1", generator=g())
    kept = paper != 0
    assert 0.08 < kept.float().mean() < 0.12
    assert torch.allclose(paper[kept], x[kept] * 10)
    assert torch.isclose(l1.abs().sum(), x.abs().sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="rescale"):
        dare_drop(x, 0.5, rescale="l2")


def test_dare_is_seeded():
    base = torch.zeros(1000)
    src = [torch.randn(1000, generator=torch.Generator().manual_seed(0))]
    a = merge_tensors("dare_linear", base, src, density=0.3, seed=5)
    b = merge_tensors("dare_linear", base, src, density=0.3, seed=5)
    c = merge_tensors("dare_linear", base, src, density=0.3, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_fisher_weights_by_fisher():
    base = {"w": torch.zeros(2)}
    s = [{"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([3.0, 3.0])}]
    f = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([3.0, 0.0])}]
    out = merge_state_dicts(base, s, "fisher", fisher=f, params={"floor": 1e-6})
    assert torch.allclose(out["w"], torch.tensor([2.5, 2.0]), atol=1e-5)
    with pytest.raises(ValueError, match="Fisher"):
        merge_state_dicts(base, s, "fisher")


def test_directional_consensus_projects_on_the_mean_direction():
    base = torch.zeros(2)
    a, b = torch.tensor([1.0, 1.0]), torch.tensor([1.0, -1.0])
    out = merge_tensors("directional_consensus", base, [a, b], [0.5, 0.5])
    # d = (1, 0); projections (1, 0) and (1, 0)
    assert torch.allclose(out, torch.tensor([1.0, 0.0]))


def test_neuromerging_drops_the_parallel_part():
    w0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    tau = torch.tensor([[0.5, 0.3], [0.2, -0.4]])
    out = merge_state_dicts({"layer.dense.weight": w0}, [{"layer.dense.weight": w0 + tau}], "neuromerging",
                            params={"density": 1.0})["layer.dense.weight"]
    # parallel to each pretrained row is removed (lambda1 = 0), the orthogonal rest kept
    assert torch.allclose(out, w0 + torch.tensor([[0.0, 0.3], [0.2, 0.0]]))
    assert is_neuronal("encoder.layer.0.dense.weight", torch.Size([2, 2]))
    assert not is_neuronal("embeddings.word_embeddings.weight", torch.Size([2, 2]))
    assert not is_neuronal("encoder.layer.0.dense.bias", torch.Size([2]))


def test_neuromerging_port_variant_rescales():
    w0 = torch.eye(4)
    tau = torch.tensor([[0.0, 1.0, 0.0, 0.0]] * 4)
    out = merge_state_dicts({"x.weight": w0}, [{"x.weight": w0 + tau}], "neuromerging",
                            params={"variant": "port", "density": 1.0, "trim_scope": "tensor"})
    assert torch.isfinite(out["x.weight"]).all()
    with pytest.raises(ValueError, match="variant"):
        merge_state_dicts({"x.weight": w0}, [{"x.weight": w0 + tau}], "neuromerging", params={"variant": "x"})


@pytest.mark.parametrize("density", [0.01, 0.2, 0.9])
def test_fast_magnitude_mask_equals_topk_on_large_tensors(density):
    x = torch.randn(300_000, generator=torch.Generator().manual_seed(2))
    k = int(density * x.numel())
    ref = torch.zeros(x.numel(), dtype=torch.bool)
    ref[torch.topk(x.abs(), k).indices] = True
    assert torch.equal(magnitude_mask(x, density), ref)


@pytest.mark.parametrize("tie_break", ["index", "mergekit"])
def test_ties_at_the_threshold_keep_exactly_k(tie_break):
    x = torch.randint(0, 7, (400_000,), generator=torch.Generator().manual_seed(0)).float()
    m = magnitude_mask(x, 0.3, tie_break=tie_break)
    assert int(m.sum()) == int(0.3 * x.numel())
    if tie_break == "mergekit":
        ref = torch.zeros_like(m)
        ref[torch.argsort(x.abs(), descending=True)[: int(0.3 * x.numel())]] = True
        assert torch.equal(m, ref)
    with pytest.raises(ValueError, match="tie_break"):
        magnitude_mask(x, 0.3, tie_break="random")


@pytest.mark.parametrize("levels", [None, 5, 40])  # continuous values; few distinct values (ties straddle the cuts)
@pytest.mark.parametrize("n", [1, 37, 300_000])  # > 2**17: the sampled bracket of the selection runs too
def test_rank_band_is_the_sorts_slice_without_sorting(levels, n):
    """Breadcrumbs' mask: ranks [lo, hi) of an ascending sort, by selection; ties in index order ("stable"), or
    exactly torch.sort's choice ("torch", mergekit's op) wherever ties straddle a cut."""
    g = torch.Generator().manual_seed(n)
    x = torch.rand(n, generator=g)
    a = (x if levels is None else (x * levels).floor()).numpy()
    stable = torch.sort(torch.from_numpy(a), stable=True).indices
    unstable = torch.sort(torch.from_numpy(a)).indices
    for lo, hi in [(0, n), (n // 10, n - n // 100), (n // 3, n // 3 + 1), (n // 2, n // 2), (0, n + 5), (n - 1, n)]:
        for ties, order in (("stable", stable), ("torch", unstable)):
            ref = torch.zeros(n, dtype=torch.bool)
            ref[order[max(lo, 0) : hi]] = True
            assert torch.equal(torch.from_numpy(rank_band_mask(a, lo, hi, ties=ties)), ref), (lo, hi, ties)
    with pytest.raises(ValueError, match="ties"):
        rank_band_mask(a, 0, n, ties="random")


@pytest.mark.parametrize(
    ("method", "params", "kept"),
    [("ties", {"density": 0.9}, 9), ("breadcrumbs", {"density": 0.9, "gamma": 0.0}, 9),
     ("breadcrumbs", {"density": 0.7, "gamma": 0.1}, 7)],
)
@pytest.mark.parametrize("per_model", [False, True])
def test_kept_counts_use_the_configs_floats_as_mergekit(method, params, kept, per_model):
    """mergekit keeps int(density * n) entries with density a Python float: int(0.9 * 10) = 9. A float32 0.9
    (0.89999998) would keep 8."""
    base = {"w": torch.zeros(10)}
    source = {"w": torch.arange(1.0, 11.0)}
    kw = {"per_source_params": [params]} if per_model else {"params": params}
    if per_model and method == "ties":
        kw["params"] = {"normalize": True}
    out = merge_state_dicts(base, [source], method, **kw)["w"]
    assert int((out != 0).sum()) == kept


def test_mergekit_gta_family_methods_are_registered_with_validated_parameters(tmp_path):
    from reprolab.mergers.weights.run import run_merge

    assert {"breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "passthrough", "nearswap"} <= set(list_methods())
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(8, 8, generator=g)}
    save_state_dict(base, tmp_path / "base")
    save_state_dict({"w": base["w"] + 0.1 * torch.randn(8, 8, generator=g)}, tmp_path / "ft")
    for method, params, match in [("della", "{density: 0.9, epsilon: 0.2}", "density \\+/- epsilon"),
                                  ("breadcrumbs", "{gamma: 1.5}", "gamma must lie in"),
                                  ("della_linear", "{epsilon: x}", "epsilon must be a number"),
                                  ("nearswap", "{}", "needs parameter\\(s\\) \\['t'\\]"),
]:
        cfg = tmp_path / "m.yaml"
        cfg.write_text(f"merge_method: {method}\nbase_model: base\nmodels: [{{model: ft, parameters: {params}}}]\n")
        with pytest.raises(ValueError, match=match):
            run_merge(cfg, tmp_path / "out", show_progress=False)
    cfg.write_text("merge_method: nearswap\nbase_model: base\nmodels: [{model: ft}]\nparameters: {t: -1}\n")
    with pytest.raises(ValueError, match=r"parameters\.t must lie in"):
        run_merge(cfg, tmp_path / "out", show_progress=False)
    cfg.write_text("merge_method: passthrough\nmodels: [{model: ft}, {model: base}]\n")
    with pytest.raises(ValueError, match="takes exactly 1 model"):
        run_merge(cfg, tmp_path / "out", show_progress=False)


@pytest.mark.parametrize("method", ["breadcrumbs", "breadcrumbs_ties", "della", "della_linear"])
def test_mergekit_gta_family_density_one_is_task_arithmetic(method):
    g = torch.Generator().manual_seed(1)
    base = {"w": torch.randn(6, 7, generator=g)}
    src = {"w": base["w"] + 0.1 * torch.randn(6, 7, generator=g)}
    out = merge_state_dicts(base, [src], method, [1.0], params={"density": 1.0})
    assert torch.allclose(out["w"], src["w"], atol=1e-6)


def _karcher_one_temporary_per_op(tensors, max_iter, tol):
    """mergekit 0.1.5's Karcher loop as written there: every operation allocates its result (the oracle)."""
    acc = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    dt, k = tensors[0].dtype, len(tensors)
    norms = [torch.linalg.vector_norm(x.to(acc)) for x in tensors]
    points = [(x / n).to(dt) for x, n in zip(tensors, norms, strict=True)]
    share = 1.0 / k
    alphas = [share / sum(share for _ in range(k)) for _ in range(k)]
    mean = torch.zeros_like(points[0])
    for a, u in zip(alphas, points, strict=True):
        mean += a * u
    mean = (mean / torch.linalg.vector_norm(mean.to(acc))).to(dt)
    for _ in range(max_iter):
        step = torch.zeros_like(mean)
        for a, u in zip(alphas, points, strict=True):
            cos = torch.clamp(torch.dot(mean.flatten(), u.flatten()), -1.0, 1.0)
            angle = torch.arccos(cos)
            if angle.item() < tol:
                continue
            step += a * (angle / torch.sin(angle)) * (u - cos * mean)
        length = torch.linalg.vector_norm(step.to(acc))
        if length.item() < tol:
            break
        mean = (torch.cos(length) * mean + torch.sin(length) * (step / length)).to(dt)
        length = torch.linalg.vector_norm(mean.to(acc))
        if length.item() > tol:
            mean = (mean / length).to(dt)
    scale = 0
    for n in norms:
        scale = scale + share * n
    return scale * mean


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_karcher_into_reused_buffers_is_bit_identical_to_one_temporary_per_op(dtype):
    from reprolab.mergers.weights.spherical import karcher_mean

    g = torch.Generator().manual_seed(3)
    tensors = [(torch.randn(64, 300, generator=g) + 0.3 * i).to(dtype) for i in range(3)]
    want = _karcher_one_temporary_per_op(tensors, 10, 1e-5)
    got = karcher_mean(tensors, 10, 1e-5)
    assert got.dtype == want.dtype and torch.equal(got, want)


def _multislerp_one_temporary_per_op(x, w):
    """mergekit 0.1.5's Multi-SLERP (normalised weights, no base) as written there: the oracle."""
    k, eps = x.shape[0], 1e-8
    flat = x.view(k, -1)
    w = w / w.sum()
    norms = torch.norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * w.view(-1, 1)).sum(0)
    mean = mean / torch.norm(mean)
    tangents = units - (units * mean).sum(-1, keepdim=True) * mean
    step = (tangents * w.view(-1, 1)).sum(0)
    length = torch.norm(step) + eps
    out = mean * torch.cos(length) + step * (torch.sin(length) / length)
    return (out * (norms.squeeze(-1) * w).sum()).view(x.shape[1:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_multislerp_into_a_reused_buffer_is_bit_identical_to_one_temporary_per_op(dtype):
    from reprolab.mergers.weights.registry import TensorContext
    from reprolab.mergers.weights.spherical import multislerp

    g = torch.Generator().manual_seed(5)
    stack = torch.randn(3, 64, 300, generator=g).to(dtype).float()  # the engine's float32 holding dtype values
    weights = (0.5, 0.3, 0.2)
    ctx = TensorContext(name="t", arith_dtype=None if dtype == torch.float32 else dtype, has_base=False,
                        weight_values=weights)
    got = multislerp(None, stack, torch.tensor(weights), {"normalize_weights": True, "eps": 1e-8}, ctx)
    want = _multislerp_one_temporary_per_op(stack.to(dtype), torch.tensor(weights, dtype=dtype)).float()
    assert torch.equal(got, want)
