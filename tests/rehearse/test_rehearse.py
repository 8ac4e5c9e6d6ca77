"""Stand-in data formats, smoke overrides, and a smoke rehearsal of one gpu claim per research line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reprolab.claims.project import find_project
from reprolab.claims.session import ClaimSession
from reprolab.data.corpus import load_embedded_corpus
from reprolab.data.mnist import load_mnist
from reprolab.data.sequences import SequenceSet
from reprolab.rehearse.data import datasets_for, prepare
from reprolab.rehearse.gtr_standin import SEQUENCES
from reprolab.rehearse.mnist_standin import SHAPES
from reprolab.rehearse.npzstream import write_npz_streamed
from reprolab.rehearse.overrides import caps_for, rehearsal_config
from reprolab.rehearse.run import rehearse_claims

ROOT = Path(__file__).resolve().parents[2]


# The fast tier's caps: the smoke caps, lowered further (one iteration, tiny mixtures) through the same code.
# Low enough to be cheap, not so low that a path is skipped: every loop still runs at least once.
TEST_CAPS = caps_for(steps=True, sizes=True)
TEST_CAPS["clustering.overcluster_then_merge"].update(
    n_components=12, latent_dim=2, n_iter=1, steps_per_epoch=1, batch_steps=1
)  # 12 >= 10 classes: the merge step still has components to merge
TEST_CAPS["merging.locale_suite"].update(adamerging_steps=1)
TEST_CAPS["lvm.data_diagnostics"].update(n_queries=50)


def test_mnist_idx_and_npz_agree(standin: tuple[Path, dict[str, str]]) -> None:
    root, env = standin
    from_idx, from_npz = load_mnist(env["REPROLAB_MNIST"]), load_mnist(root / "mnist" / "mnist.npz")
    for a, b in zip(from_idx, from_npz, strict=True):
        np.testing.assert_array_equal(a, b)
    assert from_idx[0].shape == (SHAPES["smoke"][0], 784)
    assert from_idx[0].max() <= 1.0 and len(np.unique(from_idx[1])) == 10


def test_gtr_folder_format(standin: tuple[Path, dict[str, str]]) -> None:
    _root, env = standin
    for name in ("clean", "diluted"):
        path = Path(env["REPROLAB_LVM_GTR_DIR"]) / f"{name}.npz"
        with np.load(path, allow_pickle=False) as z:
            assert z["vectors"].dtype == np.float32 and z["vectors"].shape[1] == 768
            assert z["article_ids"].dtype == np.int64
        corpus = load_embedded_corpus(path)
        np.testing.assert_allclose(np.linalg.norm(corpus.vectors, axis=1), 1.0, atol=1e-5)
        assert len(SequenceSet.from_corpus(corpus, 5)) == SEQUENCES["smoke"][name]


def test_massive_lab_format(standin: tuple[Path, dict[str, str]]) -> None:
    import transformers

    _root, env = standin
    models, data = Path(env["REPROLAB_MASSIVE_MODELS"]), Path(env["REPROLAB_MASSIVE_DATA"])
    config = transformers.AutoConfig.from_pretrained(models / "pretrained")
    assert (
        config.model_type == "xlm-roberta"
        and config.num_labels == 60
        and len(set(config.id2label.values())) == 60
    )
    locales = sorted(p.name for p in models.iterdir() if p.is_dir() and p.name != "pretrained")
    assert len(locales) >= 8 and all((models / loc / "model.safetensors").is_file() for loc in locales)
    row = json.loads((data / f"{locales[0]}.jsonl").read_text().splitlines()[0])
    assert {"partition", "utt", "intent"} <= set(row) and row["intent"] in config.label2id
    assert (models / "uriel_syntax.csv").read_text().splitlines()[0].startswith("locale,")
    assert (models / "nxn.csv").read_text().splitlines()[0].split(",")[1:] == locales


def test_streamed_npz_checks_row_count(tmp_path: Path) -> None:
    chunks = [np.zeros((2, 3), np.float32), np.ones((1, 3), np.float32)]
    write_npz_streamed(tmp_path / "a.npz", {"x": ((3, 3), np.float32, chunks)})
    with np.load(tmp_path / "a.npz") as z:
        np.testing.assert_array_equal(z["x"], np.concatenate(chunks))
    with pytest.raises(ValueError, match="promised 4 rows"):
        write_npz_streamed(tmp_path / "b.npz", {"x": ((4, 3), np.float32, chunks)})
    assert not (tmp_path / "b.npz").exists()


def test_overrides_cap_existing_keys_only() -> None:
    smoke = caps_for(steps=True, sizes=True)
    config = {"n_components": 150, "latent_dim": 2, "model": "mfa", "n_iter": 500}
    out = rehearsal_config("clustering.overcluster_then_merge", config, caps=smoke, on_cpu=False)
    assert out == {"n_components": 20, "latent_dim": 2, "model": "mfa", "n_iter": 3}  # capped, never raised
    assert config["n_components"] == 150  # the claim's own config is untouched
    nested = rehearsal_config("clustering.across_runs", {"base": config, "runs": 10, "variants": [{"n_components": 40}]},
                              caps=smoke, on_cpu=False)  # fmt: skip
    assert (
        nested["base"]["n_components"] == 20
        and nested["runs"] == 3
        and nested["variants"] == [{"n_components": 40}]
    )
    lvm = rehearsal_config(
        "lvm.train", {"epochs": 20, "device": "cuda", "torch_threads": 0}, caps={}, on_cpu=True
    )
    assert lvm == {"epochs": 20, "device": "cpu", "torch_threads": 1}


def test_step_caps_keep_real_shapes() -> None:
    # `--scale full --steps smoke`: few steps at the claim's own sizes, so memory is exercised at real size
    config = {"n_components": 200, "latent_dim": 50, "n_iter": 5000, "steps_per_epoch": 10}
    out = rehearsal_config("clustering.overcluster_then_merge", config, caps=caps_for(steps=True, sizes=False),
                           on_cpu=False)  # fmt: skip
    assert out == {"n_components": 200, "latent_dim": 50, "n_iter": 3, "steps_per_epoch": 2}
    assert caps_for(steps=False, sizes=False) == {}
    # the MASSIVE claims give only `setting`: AdaMerging's long defaults are capped all the same
    suite = rehearsal_config("merging.locale_suite", {"setting": "massive"}, caps=caps_for(steps=True, sizes=False),
                             on_cpu=True)  # fmt: skip
    assert suite == {"setting": "massive", "adamerging_steps": 5, "adamerging_epochs": 1}


def test_prepare_never_overwrites_foreign_data(tmp_path: Path) -> None:
    (tmp_path / "gtr").mkdir()
    (tmp_path / "gtr" / "clean.npz").write_bytes(b"a lab's own file")
    with pytest.raises(ValueError, match="not overwriting"):
        prepare(tmp_path, "smoke", datasets_for(["REPROLAB_LVM_GTR_DIR"]))
    assert (tmp_path / "gtr" / "clean.npz").read_bytes() == b"a lab's own file"


@pytest.mark.slow
@pytest.mark.parametrize(
    "claim_id",
    [
        "mfa-mnist-merged-nmi-078-084",
        "lvm-003-gpu-targets-unit-norm",
        "merging-inctar-source-base-catastrophic-gpu",
    ],
)
def test_smoke_rehearsal_runs_one_gpu_claim_per_line(
    standin: tuple[Path, dict[str, str]], claim_id: str
) -> None:
    _root, env = standin
    with ClaimSession(find_project(ROOT), use_cache=False) as session:
        items = [c for c in session.select(marker="gpu").claims if c.id == claim_id]
        assert len(items) == 1
        history_before = session.history.path.stat().st_mtime_ns if session.history.path.exists() else None
        [line] = rehearse_claims(session, items, env, caps=TEST_CAPS, max_seeds=1)
        history_after = session.history.path.stat().st_mtime_ns if session.history.path.exists() else None
    assert history_after == history_before  # rehearsals never enter the claims' history
    assert line.ok, line.cause
    assert line.device.startswith(("cpu", "cuda")) and line.seconds > 0
    assert "rehearsed" in line.render()
