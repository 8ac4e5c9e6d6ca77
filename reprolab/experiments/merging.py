"""Experiments of the weight-space merging line (note 004), on the cross-locale fixture (fast) or on XLM-R
fine-tuned on MASSIVE (gpu, from local paths).

``merging.locale_suite`` runs every comparison the note's claims need on all targets in one go (merges of a
200k-parameter model take milliseconds), so the claims share one cached run per seed. What the seed changes:
the test sample drawn for each target, DARE's drop masks, AdaMerging's minibatches. The models, the NxN
matrix used for source selection (on a fixed dev set) and the target groups are fixed by the fixture, so the
spread over seeds is evaluation noise of one trained "world", not training noise (see docs/merging.md).

Target groups are set from the dev-set NxN matrix before any test evaluation:
- constructive / destructive: the 3 targets with the lowest / highest ZS/Self ratio (sw-KE / vi-VN analogues);
- hard / easy: the 3 targets with the lowest / highest best-source dev accuracy;
- synergy / interference: the 3 targets with the highest / lowest dev-set Merging Effect of the similarity merge.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprolab.diagnostics.merging import (
    merging_effect,
    predictor_accuracy,
    predictor_features,
    spearman,
    zs_self_ratio,
)
from reprolab.diagnostics.similarity import cka_matrix, compatibility_weights, tv_cosine_matrix
from reprolab.experiments.registry import config_value, experiment
from reprolab.mergers.weights.adamerging import adamerge
from reprolab.mergers.weights.engine import merge_state_dicts
from reprolab.mergers.weights.selection import accuracy_similarity, feature_similarity, select_sources
from reprolab.mergers.weights.task_vectors import task_vector

StateDict = dict[str, torch.Tensor]


@dataclass
class Lab:
    """What an experiment needs from a setting: models, selection matrices, evaluation."""

    locales: list[str]
    base: StateDict
    finetuned: dict[str, StateDict]
    nxn: np.ndarray  # dev accuracy [source, target]
    syntax: np.ndarray  # URIEL-style feature vectors
    regions: list[object]
    evaluate: Any  # (state, target_index, split, seed) -> accuracy
    features: Any  # state -> [n, d] representations on a shared probe set (for CKA)
    model: torch.nn.Module
    unlabeled: Any  # (target_index, seed) -> input tensor


def _locale_lab() -> Lab:
    from reprolab.data.locales import dev_set, heldout_set, load_fixture, make_model, unlabeled_set

    fx = load_fixture()
    world = fx.world
    model = make_model(world)
    model.eval()
    cache: dict[tuple, tuple[torch.Tensor, np.ndarray]] = {}

    def data(t: int, split: str, seed: int) -> tuple[torch.Tensor, np.ndarray]:
        key = (t, split, seed)
        if key not in cache:
            loc = world.locales[t]
            x, y = dev_set(world, loc) if split == "dev" else heldout_set(world, loc, seed)
            cache[key] = (torch.from_numpy(x), y)
        return cache[key]

    @torch.no_grad()
    def evaluate(state: StateDict, t: int, split: str, seed: int) -> float:
        x, y = data(t, split, seed)
        model.load_state_dict(state)
        return float((model(x).argmax(-1).numpy() == y).mean())

    probe = torch.from_numpy(np.concatenate([dev_set(world, loc)[0][:50] for loc in world.locales]))

    @torch.no_grad()
    def features(state: StateDict) -> np.ndarray:
        model.load_state_dict(state)
        return model.features(probe).numpy()

    return Lab(
        world.locales, fx.base, fx.finetuned, fx.nxn, world.syntax_features(), list(world.family), evaluate,
        features, model, lambda t, seed: torch.from_numpy(unlabeled_set(world, world.locales[t], seed)),
    )


def _massive_lab() -> Lab:  # pragma: no cover - gpu tier, needs local data and CUDA
    """XLM-R fine-tuned on MASSIVE, from local folders (see :func:`massive_paths` and docs/merging.md)."""
    import csv
    import json

    import transformers

    models_dir, data_dir = massive_paths()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    locales = sorted(p.name for p in models_dir.iterdir() if p.is_dir() and p.name != "pretrained")
    if not locales:
        raise ValueError(f"{models_dir}: no per-locale model folders")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(models_dir / "pretrained").to(device).eval()
    tok = transformers.AutoTokenizer.from_pretrained(models_dir / "pretrained")
    label_of = {v: int(k) for k, v in model.config.id2label.items()}
    base = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from reprolab.mergers.weights.io import load_state_dict

    finetuned = {loc: load_state_dict(models_dir / loc) for loc in locales}
    rows: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for loc in locales:
        for line in (data_dir / f"{loc}.jsonl").read_text().splitlines():
            r = json.loads(line)
            rows.setdefault((loc, r["partition"]), []).append((r["utt"], label_of[r["intent"]]))

    def batches(t: int, split: str, seed: int):
        data = rows[(locales[t], "dev" if split == "dev" else "test")]
        if split != "dev":  # bootstrap resample of the test split per seed
            idx = np.random.default_rng([seed, t]).integers(0, len(data), len(data))
            data = [data[i] for i in idx]
        for i in range(0, len(data), 256):
            chunk = data[i : i + 256]
            enc = tok([u for u, _ in chunk], padding=True, truncation=True, max_length=64, return_tensors="pt")
            yield {k: v.to(device) for k, v in enc.items()}, torch.tensor([y for _, y in chunk], device=device)

    @torch.no_grad()
    def evaluate(state: StateDict, t: int, split: str, seed: int) -> float:
        model.load_state_dict(state)
        hit = n = 0
        for enc, y in batches(t, split, seed):
            hit += int((model(**enc).logits.argmax(-1) == y).sum())
            n += len(y)
        return hit / n

    nxn_file = models_dir / "nxn.csv"
    if nxn_file.is_file():
        table = list(csv.reader(nxn_file.open()))
        cols = table[0][1:]
        nxn = np.array([[float(table[1 + cols.index(s)][1 + cols.index(t)]) for t in locales] for s in locales])
    else:
        nxn = np.array([[evaluate(finetuned[s], j, "dev", 0) for j in range(len(locales))] for s in locales])
    feats = list(csv.reader((models_dir / "uriel_syntax.csv").open()))
    by_loc = {r[0]: [float(x) for x in r[1:]] for r in feats[1:]}
    probe = next(batches(0, "dev", 0))[0]

    @torch.no_grad()
    def features(state: StateDict) -> np.ndarray:
        model.load_state_dict(state)
        return model.base_model(**probe).last_hidden_state[:, 0].float().cpu().numpy()

    def unlabeled(t: int, seed: int) -> dict[str, torch.Tensor]:
        utts = [u for u, _ in rows[(locales[t], "dev")]]  # labels unused: AdaMerging sees inputs only
        enc = tok(utts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items()}

    return Lab(locales, base, finetuned, nxn, np.array([by_loc[loc] for loc in locales]),
               [loc.split("-")[1] for loc in locales], evaluate, features, model, unlabeled)


_LABS: dict[str, Lab] = {}


def get_lab(setting: str) -> Lab:
    if setting not in ("locales", "massive"):
        raise ValueError(f"config key 'setting' must be 'locales' or 'massive', got {setting!r}")
    if setting not in _LABS:
        _LABS[setting] = _locale_lab() if setting == "locales" else _massive_lab()
    return _LABS[setting]


class Runner:
    """Merges for one target with the note's pipeline (selection -> weights -> method)."""

    def __init__(self, lab: Lab, seed: int, num_languages: int) -> None:
        self.lab, self.seed, self.n = lab, seed, num_languages
        self.real = accuracy_similarity(lab.nxn)
        self.uriel = feature_similarity(lab.syntax)
        self._tv: dict[str, StateDict] = {}

    def select(self, t: int, *, similarity: str = "real", n: int | None = None, include_target: bool = False):
        s = self.real if similarity == "real" else self.uriel
        return select_sources(s, t, n or self.n, include_target=include_target)

    def tv(self, loc: str) -> StateDict:
        if loc not in self._tv:
            self._tv[loc] = task_vector(self.lab.base, self.lab.finetuned[loc])
        return self._tv[loc]

    def merge(self, sel, method: str, params: Mapping[str, Any] | None = None, *, weights: Sequence[float] | None = None,
              base: StateDict | None = None, allow_source_as_base: bool = False) -> StateDict:
        srcs = [self.lab.finetuned[self.lab.locales[i]] for i in sel.sources]
        return merge_state_dicts(
            self.lab.base if base is None else base, srcs, method, list(weights if weights is not None else sel.weights),
            params=params, seed=self.seed, allow_source_as_base=allow_source_as_base,
        )

    def acc(self, state: StateDict, t: int, split: str = "test") -> float:
        return self.lab.evaluate(state, t, split, self.seed)

    def zs(self, t: int, sources: Sequence[int], split: str = "test") -> list[float]:
        return [self.acc(self.lab.finetuned[self.lab.locales[i]], t, split) for i in sources]


TIES = {"density": 0.2, "lambda": 1.0, "normalize": True}


def _groups(lab: Lab, r: Runner) -> dict[str, list[int]]:
    n = len(lab.locales)
    ratio = np.array([zs_self_ratio(lab.nxn, t) for t in range(n)])
    best = np.array([np.delete(lab.nxn[:, t], t).max() for t in range(n)])
    dev_effect = []
    for t in range(n):
        sel = r.select(t)
        dev_effect.append(merging_effect(r.acc(r.merge(sel, "linear"), t, "dev"), lab.nxn[sel.sources, t]))
    order = lambda v: [int(i) for i in np.argsort(v, kind="stable")]  # noqa: E731
    return {
        "constructive": order(ratio)[:3], "destructive": order(ratio)[-3:],
        "hard": order(best)[:3], "easy": order(best)[-3:],
        "interference": order(np.array(dev_effect))[:3], "synergy": order(np.array(dev_effect))[-3:],
    }


@experiment(
    "merging.locale_suite",
    version="1",
    metrics=(
        "similarity_acc_mean", "merging_effect_mean", "synergy_fraction",
        "inctar_bug_drop", "inctar_minus_self", "inctar_buggy_minus_self",
        "dare_minus_ties", "dare_relative_change",
        "destructive_ties_vs_best", "destructive_similarity_vs_best",
        "constructive_5_minus_3", "destructive_5_minus_3", "constructive_3_minus_7",
        "real_minus_uriel", "real_minus_uriel_5",
        "neuro_last_fraction", "neuro_minus_worst_other", "neuro_official_last_fraction",
        "zs_ratio_vs_gain_spearman", "zs_ratio_vs_effect_spearman",
        "predictor_v1_accuracy", "predictor_v2_accuracy", "predictor_v3_accuracy",
        "tvcos_minus_similarity", "cka_minus_similarity", "tvcos_gain_fraction",
        "dc_minus_similarity_interference", "dc_minus_similarity_synergy",
        "ada_minus_ties_hard", "ada_minus_ties_easy",
    ),
)
def locale_suite(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    setting = config_value(config, "setting", "locales", kind=str)
    n_lang = config_value(config, "num_languages", 5, kind=int)
    ada_steps = config_value(config, "adamerging_steps", 200, kind=int)
    ada_lr = config_value(config, "adamerging_lr", 1e-3, kind=float)
    unknown = sorted(set(config) - {"setting", "num_languages", "adamerging_steps", "adamerging_lr"})
    if unknown:
        raise ValueError(f"merging.locale_suite: unknown config key(s) {unknown}")
    lab = get_lab(setting)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention (and CPU time) on a shared machine
    try:
        return _suite(lab, seed, n_lang, ada_steps, ada_lr)
    finally:
        torch.set_num_threads(threads)


def _suite(lab: Lab, seed: int, n_lang: int, ada_steps: int, ada_lr: float) -> dict[str, float]:
    torch.manual_seed(seed)
    r = Runner(lab, seed, n_lang)
    n = len(lab.locales)
    targets = list(range(n))
    g = _groups(lab, r)
    m: dict[str, float] = {}

    sims, effects, gains, best_zs = {}, {}, {}, {}
    for t in targets:
        sel = r.select(t)
        zs = r.zs(t, sel.sources)
        sims[t] = r.acc(r.merge(sel, "linear"), t)
        effects[t] = merging_effect(sims[t], zs)
        best_zs[t] = max(zs)
        gains[t] = sims[t] - best_zs[t]
    m["similarity_acc_mean"] = float(np.mean(list(sims.values())))
    m["merging_effect_mean"] = float(np.mean(list(effects.values())))
    m["synergy_fraction"] = float(np.mean([e > 0 for e in effects.values()]))

    # IncTar: target + (n-1) REAL sources, TIES against the pretrained model vs against the first source (the
    # note's bug). Task arithmetic would not do: with weights summing to 1 it equals sum_i w_i theta_i whatever
    # the base, so only a method that trims or elects (TIES, the note's AdaMerging) can show the bug.
    drop, vs_self, bug_self = [], [], []
    for t in targets:
        sel = r.select(t, include_target=True)
        good = r.acc(r.merge(sel, "ties", TIES), t)
        first = lab.finetuned[lab.locales[sel.sources[0]]]
        bad = r.acc(r.merge(sel, "ties", TIES, base=first, allow_source_as_base=True), t)
        self_acc = r.acc(lab.finetuned[lab.locales[t]], t)
        drop.append(good - bad)
        vs_self.append(good - self_acc)
        bug_self.append(bad - self_acc)
    m["inctar_bug_drop"], m["inctar_minus_self"] = float(np.mean(drop)), float(np.mean(vs_self))
    m["inctar_buggy_minus_self"] = float(np.mean(bug_self))

    # TIES with and without DARE (p = 0.9, the paper's 1/(1-p) rescale, as MergingUriel's DARE).
    ties_acc, dare_acc = {}, {}
    for t in targets:
        sel = r.select(t)
        ties_acc[t] = r.acc(r.merge(sel, "ties", TIES), t)
        dare_acc[t] = r.acc(r.merge(sel, "dare_ties", {"density": 0.1, "rescale": "paper", "normalize": True}), t)
    m["dare_minus_ties"] = float(np.mean([dare_acc[t] - ties_acc[t] for t in targets]))
    m["dare_relative_change"] = float(np.mean([(dare_acc[t] - ties_acc[t]) / ties_acc[t] for t in targets]))
    m["destructive_ties_vs_best"] = float(np.mean([ties_acc[t] - best_zs[t] for t in g["destructive"]]))
    m["destructive_similarity_vs_best"] = float(np.mean([gains[t] for t in g["destructive"]]))

    # Number of sources (similarity merge, REAL, ExcTar).
    def sim_acc(t: int, k: int, similarity: str = "real") -> float:
        return r.acc(r.merge(r.select(t, n=k, similarity=similarity), "linear"), t)

    m["constructive_5_minus_3"] = float(np.mean([sim_acc(t, 5) - sim_acc(t, 3) for t in g["constructive"]]))
    m["destructive_5_minus_3"] = float(np.mean([sim_acc(t, 5) - sim_acc(t, 3) for t in g["destructive"]]))
    m["constructive_3_minus_7"] = float(np.mean([sim_acc(t, 3) - sim_acc(t, 7) for t in g["constructive"]]))
    m["real_minus_uriel"] = float(np.mean([sim_acc(t, 3) - sim_acc(t, 3, "uriel") for t in targets]))
    m["real_minus_uriel_5"] = float(np.mean([sim_acc(t, 5) - sim_acc(t, 5, "uriel") for t in targets]))

    # NeuroMerging (the note's port and the official algorithm) vs TIES and similarity.
    last, margin, last_off = [], [], []
    for t in targets:
        sel = r.select(t)
        port = r.acc(r.merge(sel, "neuromerging", {"variant": "port", "density": 0.85, "trim_scope": "tensor"}), t)
        official = r.acc(r.merge(sel, "neuromerging", {"variant": "official", "density": 0.85}), t)
        worst = min(ties_acc[t], sims[t])
        last.append(port <= worst + 0.005)
        last_off.append(official <= worst + 0.005)
        margin.append(port - worst)
    m["neuro_last_fraction"] = float(np.mean(last))
    m["neuro_official_last_fraction"] = float(np.mean(last_off))
    m["neuro_minus_worst_other"] = float(np.mean(margin))

    # ZS/Self ratio and the synergy predictors against what merging does.
    ratios = [zs_self_ratio(lab.nxn, t) for t in targets]
    m["zs_ratio_vs_gain_spearman"] = spearman(ratios, [gains[t] for t in targets])
    m["zs_ratio_vs_effect_spearman"] = spearman(ratios, [effects[t] for t in targets])
    feats = [predictor_features(lab.nxn, t, r.select(t).sources, r.uriel + np.eye(n), lab.regions) for t in targets]
    eff = [effects[t] for t in targets]
    for v in ("v1", "v2", "v3"):
        m[f"predictor_{v}_accuracy"] = predictor_accuracy([getattr(f, v) for f in feats], eff)

    # Similarity x compatibility (task-vector cosine, CKA) against plain similarity weights.
    d_tv, d_cka = [], []
    feats_cache: dict[str, np.ndarray] = {}
    for t in targets:
        sel = r.select(t)
        locs = [lab.locales[i] for i in sel.sources]
        w_tv = compatibility_weights(sel.weights, tv_cosine_matrix([r.tv(loc) for loc in locs]))
        for loc in locs:
            if loc not in feats_cache:
                feats_cache[loc] = lab.features(lab.finetuned[loc])
        w_cka = compatibility_weights(sel.weights, cka_matrix([feats_cache[loc] for loc in locs]))
        d_tv.append(r.acc(r.merge(sel, "linear", weights=w_tv), t) - sims[t])
        d_cka.append(r.acc(r.merge(sel, "linear", weights=w_cka), t) - sims[t])
    m["tvcos_minus_similarity"], m["cka_minus_similarity"] = float(np.mean(d_tv)), float(np.mean(d_cka))
    m["tvcos_gain_fraction"] = float(np.mean([d > 0 for d in d_tv]))

    # Directional consensus on interference vs synergy targets.
    def dc_minus_sim(ts: list[int]) -> float:
        return float(np.mean([r.acc(r.merge(r.select(t), "directional_consensus"), t) - sims[t] for t in ts]))

    m["dc_minus_similarity_interference"] = dc_minus_sim(g["interference"])
    m["dc_minus_similarity_synergy"] = dc_minus_sim(g["synergy"])

    # AdaMerging (task-wise, init = REAL weights, entropy on unlabeled target data) vs TIES, hard vs easy.
    def ada_minus_ties(ts: list[int]) -> float:
        out = []
        for t in ts:
            sel = r.select(t)
            tvs = [r.tv(lab.locales[i]) for i in sel.sources]
            merged, _ = adamerge(lab.model, lab.base, tvs, lab.unlabeled(t, seed), init=sel.weights,
                                 lr=ada_lr, steps=ada_steps, seed=seed)
            out.append(r.acc(merged, t) - ties_acc[t])
        return float(np.mean(out))

    m["ada_minus_ties_hard"] = ada_minus_ties(g["hard"])
    m["ada_minus_ties_easy"] = ada_minus_ties(g["easy"])
    return m


def massive_paths() -> tuple[Path, Path]:
    """The gpu tier's inputs: REPROLAB_MASSIVE_MODELS (pretrained/ + one HF folder per locale) and
    REPROLAB_MASSIVE_DATA (MASSIVE 1.1 jsonl files, one per locale)."""
    try:
        return Path(os.environ["REPROLAB_MASSIVE_MODELS"]), Path(os.environ["REPROLAB_MASSIVE_DATA"])
    except KeyError as exc:
        raise ValueError(f"the massive setting needs the environment variable {exc.args[0]}") from None
