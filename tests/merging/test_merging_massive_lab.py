"""The MASSIVE lab (gpu tier's code path) on a tiny generated XLM-R-shaped stand-in, on CPU: no aliasing of the
base, default LABEL_i configs, regions from the language table, bounded memory, the whole suite end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from massive_standin import LOCALES, write_massive_standin

from reprolab.data.locales import MASSIVE_LANGUAGES, language_region
from reprolab.experiments import merging


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return write_massive_standin(tmp_path_factory.mktemp("massive"), LOCALES, id2label=False, nxn=True, per_split=12)


@pytest.fixture()
def lab(standin, monkeypatch):
    models, data = standin
    monkeypatch.setenv("REPROLAB_MASSIVE_MODELS", str(models))
    monkeypatch.setenv("REPROLAB_MASSIVE_DATA", str(data))
    merging._LABS.pop(("massive", 0), None)
    yield merging.get_lab("massive")
    merging._LABS.pop(("massive", 0), None)


def test_base_is_a_copy_not_the_live_weights(lab):
    before = {k: v.clone() for k, v in lab.base.items()}
    src = lab.finetuned[lab.locales[0]]
    lab.evaluate(src, 0, "dev", 0)  # loads the fine-tune into the module
    assert all(torch.equal(before[k], lab.base[k]) for k in before), "evaluating a model changed the base"
    live = lab.model.state_dict()
    assert all(lab.base[k].data_ptr() != live[k].data_ptr() for k in live)
    r = merging.Runner(lab, 0, 3)
    merged = r.merge(r.select(0), "ties", merging.TIES)  # no BaseIsSourceError: the base is the pretrained model
    assert set(merged) == set(lab.base)


def test_default_label_config_and_regions_from_the_language_table(lab, standin):
    models, _ = standin
    cfg = json.loads((models / "pretrained" / "config.json").read_text())
    assert all(v == f"LABEL_{k}" for k, v in cfg.get("id2label", {"0": "LABEL_0"}).items())
    assert lab.regions == [language_region(loc) for loc in lab.locales]
    assert lab.regions[lab.locales.index("vi-VN")] == lab.regions[lab.locales.index("km-KH")] == "South-eastern Asia"
    assert not any(r in {loc.split("-")[1] for loc in LOCALES} for r in lab.regions)  # not country codes
    assert len(MASSIVE_LANGUAGES) == 52
    with pytest.raises(ValueError, match="language table"):
        language_region("xx-XX")


def test_label_map_errors_and_named_labels(tmp_path):
    Cfg = SimpleNamespace(num_labels=3, id2label={0: "a", 1: "b", 2: "c"})

    assert merging._label_map(Cfg, {"a", "c"}, tmp_path) == {"a": 0, "b": 1, "c": 2}
    with pytest.raises(ValueError, match="lacks intent"):
        merging._label_map(Cfg, {"a", "zzz"}, tmp_path)
    Cfg.id2label = {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert merging._label_map(Cfg, {"b", "a"}, tmp_path) == {"a": 0, "b": 1}
    (tmp_path / "labels.txt").write_text("c\nb\na\n")
    assert merging._label_map(Cfg, {"b", "a"}, tmp_path)["a"] == 2
    with pytest.raises(ValueError, match="outside"):
        merging._label_map(Cfg, {0, 7}, tmp_path)


def test_suite_runs_end_to_end_with_bounded_memory(lab):
    out = merging.locale_suite({"setting": "massive", "adamerging_steps": 2, "adamerging_epochs": 1}, 0)
    assert all(np.isfinite(v) for v in out.values())
    n = len(lab.locales)
    assert lab.finetuned.peak_alive <= lab.max_resident + 1 < n  # never all fine-tunes in memory at once
    assert lab.finetuned.loads > n  # they were streamed from disk, not held


def test_store_is_lru_and_checks_its_keys():
    loads = []
    store = merging.BoundedStore(["a", "b", "c"], lambda k: loads.append(k) or {"t": torch.zeros(1)}, capacity=2)
    store["a"], store["b"], store["a"], store["c"], store["a"]
    assert loads == ["a", "b", "c"]  # "b" was the least recently used when "c" came in
    with pytest.raises(KeyError):
        store["zz"]
    with pytest.raises(ValueError, match="capacity"):
        merging.BoundedStore([], dict, capacity=0)


def test_missing_data_file_is_named(standin, monkeypatch, tmp_path):
    models, _ = standin
    monkeypatch.setenv("REPROLAB_MASSIVE_MODELS", str(models))
    monkeypatch.setenv("REPROLAB_MASSIVE_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=r"cy-GB\.jsonl missing"):
        merging._massive_lab()
