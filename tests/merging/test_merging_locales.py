"""The cross-locale fixture, AdaMerging and the Fisher diagonal on it, and the suite experiment's contract."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from reprolab.data.locales import (
    COMMITTED_SEEDS,
    FIXTURE_DIR,
    LocaleWorld,
    WorldSpec,
    _committed_dir,
    heldout_set,
    load_fixture,
    load_world,
    make_model,
)
from reprolab.mergers.weights import merge_state_dicts
from reprolab.mergers.weights.adamerging import adamerge
from reprolab.mergers.weights.fisher import diagonal_fisher
from reprolab.mergers.weights.task_vectors import task_vector


@pytest.fixture(scope="module")
def fx():
    return load_fixture()


def test_world_is_seeded_and_locales_differ():
    a, b = LocaleWorld(WorldSpec()), LocaleWorld(WorldSpec())
    xa, ya = a.sample("A1", 50, np.random.default_rng(0))
    xb, yb = b.sample("A1", 50, np.random.default_rng(0))
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    shared = (a.lexicon[0] == a.lexicon[1]).mean()
    across = (a.lexicon[0] == a.lexicon[-1]).mean()
    assert shared > across  # same family shares more vocabulary
    with pytest.raises(ValueError, match="unknown locale"):
        a.sample("ZZ", 3, np.random.default_rng(0))


def test_fixture_is_committed_intact_and_has_a_transfer_spread(fx):
    assert fx.path == FIXTURE_DIR, "the committed fixture should be valid (else it was rebuilt into the cache)"
    diag = np.diag(fx.nxn)
    off = fx.nxn[~np.eye(len(fx.nxn), dtype=bool)]
    assert diag.min() > 0.6 and fx.pretrained_acc.max() < 0.3  # every fine-tune learnt its locale (chance 0.125)
    assert off.max() - off.min() > 0.3  # good and poor transfer both exist


def test_each_seed_is_its_own_world():
    a, b = LocaleWorld(WorldSpec(seed=0)), LocaleWorld(WorldSpec(seed=1))
    assert not np.array_equal(a.lexicon, b.lexicon)  # lexicons, word orders and so the fine-tunes differ
    assert load_world(0).path == FIXTURE_DIR  # seed 0 is the committed world
    assert a.regions()[:3] == ["region A"] * 3 and a.regions()[3] == "region B"


def test_the_fast_claims_worlds_are_committed_and_intact() -> None:
    # seeds 0-4 are read from fixtures/, never rebuilt: a rebuild on another CPU differs (see _committed_dir)
    for seed in COMMITTED_SEEDS:
        assert load_world(seed).path == _committed_dir(replace(WorldSpec(), seed=seed))
        assert _committed_dir(replace(WorldSpec(), seed=seed)).parent == FIXTURE_DIR.parent


def test_median_split_ceiling_bounds_predictor_accuracy():
    from reprolab.diagnostics.merging import predictor_accuracy
    from reprolab.experiments.merging import median_split_ceiling

    rng = np.random.default_rng(0)
    for k in range(13):
        effects = np.r_[np.full(k, 0.02), np.full(12 - k, -0.02)]
        ceiling = median_split_ceiling(effects)
        best = max(predictor_accuracy(rng.permutation(12).astype(float), effects) for _ in range(300))
        assert best <= ceiling + 1e-12
        assert 1 - ceiling - 1e-12 <= min(predictor_accuracy(rng.permutation(12).astype(float), effects) for _ in range(50))
    assert median_split_ceiling([0.1] * 11 + [-0.1]) == 7 / 12  # the old fixture: 11 of 12 positive
    assert median_split_ceiling([0.1] * 4 + [-0.1] * 8) == 10 / 12


def test_adamerging_moves_coefficients_and_lowers_entropy(fx):
    locs = fx.locales[:3]
    tvs = [task_vector(fx.base, fx.finetuned[loc]) for loc in locs]
    model = make_model(fx.world)
    x = torch.from_numpy(heldout_set(fx.world, "A1", 0, n=128)[0])

    def entropy(sd):
        model.load_state_dict(sd)
        with torch.no_grad():
            p = model(x).softmax(-1)
        return float(-(p * p.log()).sum(-1).mean())

    start = merge_state_dicts(fx.base, [fx.finetuned[loc] for loc in locs], "task_arithmetic", [0.3] * 3)
    merged, lam = adamerge(model, fx.base, tvs, x, init=0.3, lr=1e-2, steps=20, seed=0)
    assert lam.shape == (3,) and not torch.allclose(lam, torch.full((3,), 0.3))
    assert entropy(merged) < entropy(start)
    _, lam2 = adamerge(model, fx.base, tvs, x, init=0.3, lr=1e-2, steps=20, seed=0)
    assert torch.equal(lam, lam2)
    _, lam_layer = adamerge(model, fx.base, tvs, x, granularity="layer", steps=2)
    assert lam_layer.shape == (3, sum(v.is_floating_point() for v in fx.base.values()))
    with pytest.raises(ValueError, match="granularity"):
        adamerge(model, fx.base, tvs, x, granularity="block")
    with pytest.raises(ValueError, match="empty"):
        adamerge(model, fx.base, [], x)


def test_adamerging_note_schedule_passes_over_the_data_and_clamps(fx):
    locs = fx.locales[:3]
    tvs = [task_vector(fx.base, fx.finetuned[loc]) for loc in locs]
    model = make_model(fx.world)
    x = torch.from_numpy(heldout_set(fx.world, "A1", 0, n=48)[0])
    _, lam = adamerge(model, fx.base, tvs, x, init=[0.9, 0.05, 0.05], lr=0.5, epochs=2, batch_size=16, clamp=(0.0, 1.0))
    assert ((lam >= 0) & (lam <= 1)).all() and not torch.allclose(lam, torch.tensor([0.9, 0.05, 0.05]))
    _, lam0 = adamerge(model, fx.base, tvs, x, init=[0.9, 0.05, 0.05], epochs=0, steps=50)
    assert torch.equal(lam0, torch.tensor([0.9, 0.05, 0.05]))  # epochs given: steps ignored
    with pytest.raises(ValueError, match="clamp"):
        adamerge(model, fx.base, tvs, x, clamp=(1.0, 0.0))


def test_fisher_diagonal_and_fisher_merge(fx):
    model = make_model(fx.world)
    x, y = heldout_set(fx.world, "A1", 0, n=64)
    f = diagonal_fisher(model, fx.finetuned["A1"], torch.from_numpy(x), torch.from_numpy(y))
    assert set(f) == {k for k, v in fx.base.items() if v.is_floating_point()}
    assert all((v >= 0).all() for v in f.values()) and sum(float(v.sum()) for v in f.values()) > 0
    merged = merge_state_dicts(fx.base, [fx.finetuned["A1"], fx.finetuned["A2"]], "fisher", fisher=[f, f])
    assert all(torch.isfinite(v).all() for v in merged.values())
    with pytest.raises(ValueError, match="matching"):
        diagonal_fisher(model, fx.base, torch.from_numpy(x), torch.from_numpy(y[:3]))


def test_suite_rejects_bad_config():
    from reprolab.experiments.merging import locale_suite

    with pytest.raises(ValueError, match="unknown config key"):
        locale_suite({"setting": "locales", "num_langs": 3}, 0)
    with pytest.raises(ValueError, match="setting"):
        locale_suite({"setting": "mars"}, 0)


def test_locales_zs_self_ratio_is_the_checked_diagnostics_one():
    # data.locales had its own unchecked copy: zero self accuracy gave NaN and target=-1 wrapped around.
    from reprolab.data import locales
    from reprolab.diagnostics import merging

    assert locales.zs_self_ratio is merging.zs_self_ratio
    nxn = np.array([[0.0, 0.5], [0.4, 0.8]])
    with pytest.raises(ValueError, match=r"target 0 has zero self accuracy"):
        locales.zs_self_ratio(nxn, 0)


def test_adamerging_refuses_bad_init_task_vectors_and_inputs(fx):
    # NaN init used to give silent NaN coefficients; a missing key or a wrong shape failed with KeyError or
    # torch's RuntimeError; unequal-length keyword inputs were not checked.
    locs = fx.locales[:2]
    tvs = [task_vector(fx.base, fx.finetuned[loc]) for loc in locs]
    model = make_model(fx.world)
    x = torch.from_numpy(heldout_set(fx.world, "A1", 0, n=16)[0])
    with pytest.raises(ValueError, match=r"AdaMerging init must be finite"):
        adamerge(model, fx.base, tvs, x, init=[float("nan"), 0.3], steps=1)
    name = next(iter(tvs[0]))
    missing = {k: v for k, v in tvs[1].items() if k != name}
    with pytest.raises(ValueError, match=rf"task_vectors\[1\] is missing tensor\(s\) \['{name}'\]"):
        adamerge(model, fx.base, [tvs[0], missing], x, steps=1)
    wrong = {**tvs[1], name: torch.zeros(3, 3, 3)}
    with pytest.raises(ValueError, match=rf"tensor '{name}': task_vectors\[1\] has shape \(3, 3, 3\)"):
        adamerge(model, fx.base, [tvs[0], wrong], x, steps=1)
    with pytest.raises(ValueError, match=r"unlabeled inputs must have equal lengths"):
        adamerge(model, fx.base, tvs, {"a": x, "b": x[:5]}, steps=1)
    # NaN in a task vector or in the data gave NaN coefficients silently
    poisoned = {**tvs[1], name: torch.full_like(tvs[1][name], float("nan"))}
    with pytest.raises(ValueError, match=r"AdaMerging: task_vectors\[1\] holds non-finite values"):
        adamerge(model, fx.base, [tvs[0], poisoned], x, steps=1)


@pytest.mark.parametrize(("chunk", "error"), [(0, ValueError), (-1, ValueError), (2.5, TypeError), ("8", TypeError)])
def test_fisher_refuses_a_bad_chunk(fx, chunk, error):
    # chunk=0 used to fail with Python's 'range() arg 3 must not be zero'.
    model = make_model(fx.world)
    x, y = heldout_set(fx.world, "A1", 0, n=8)
    with pytest.raises(error, match=r"Fisher chunk must be (an int|>= 1)"):
        diagonal_fisher(model, fx.finetuned["A1"], torch.from_numpy(x), torch.from_numpy(y), chunk=chunk)
