"""`reprolab merge` never destroys, corrupts or leaks data (issue 8): OUT rules, atomic output, model-folder
containment, and every bad input a one-line error. Each case runs as a unit test and end to end through the CLI."""

from __future__ import annotations

import json
import os
import struct
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from reprolab.cli import cli
from reprolab.mergers.weights import load_state_dict, save_state_dict
from reprolab.mergers.weights.io import Checkpoint, read_header
from reprolab.mergers.weights.output import LOCK, MANIFEST, TMP_PREFIX, OutputFolder, check_separate
from reprolab.mergers.weights.run import run_merge


@pytest.fixture
def models(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {"a.weight": torch.randn(6, 5, generator=g), "a.bias": torch.randn(6, generator=g)}
    for i, name in enumerate(("base", "ft0", "ft1")):
        sd = base if i == 0 else {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        save_state_dict(sd, tmp_path / name)
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": "toy", "torch_dtype": "float32"}))
    return tmp_path


def _config(tmp: Path, text: str = "", name: str = "merge.yaml") -> Path:
    body = text or "merge_method: task_arithmetic\nbase_model: base\nmodels: [{model: ft0}, {model: ft1}]\n"
    p = tmp / name
    p.write_text(textwrap.dedent(body))
    return p


def _cli(*args: object) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["merge", *map(str, args), "--quiet"])
    assert r.exception is None or isinstance(r.exception, SystemExit), f"traceback: {r.exception!r}"
    return r.exit_code, r.output


def _refused(args: tuple, match: str) -> str:
    code, out = _cli(*args)
    lines = out.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("Error: "), out
    assert match in lines[0], lines[0]
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. OUT handling ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("out", ["base", "ft0", "base/merged", "."])
def test_out_equal_to_inside_or_containing_an_input_is_refused(models, out):
    before = {n: _snapshot(models / n) for n in ("base", "ft0", "ft1")}
    line = _refused((_config(models), models / out), "write the merge to a separate folder")
    assert str(models / out) in line or str((models / out).resolve()) in line
    assert {n: _snapshot(models / n) for n in ("base", "ft0", "ft1")} == before
    with pytest.raises(ValueError, match="separate folder"):
        run_merge(_config(models), models / out, show_progress=False)


@pytest.mark.parametrize("args", [("",), ("out", "--intermediate-dir", "  ")])
def test_an_empty_out_is_refused_not_read_as_the_working_directory(models, monkeypatch, args):
    cfg = _config(models)
    monkeypatch.chdir(models / "ft0")  # an empty path would resolve here: beside ft0's own weights
    before = _snapshot(models)
    r = CliRunner().invoke(cli, ["merge", str(cfg), *args, "--quiet"])
    assert r.exit_code == 2 and "is empty" in r.output, r.output
    assert _snapshot(models) == before


def test_out_reached_through_a_symlink_is_resolved(models):
    (models / "link").symlink_to(models / "base", target_is_directory=True)
    _refused((_config(models), models / "link"), "is the folder of the base model")
    assert (models / "base" / "model.safetensors").is_file()


def test_out_inside_a_fisher_files_folder_is_refused(models):
    (models / "fis").mkdir()
    for name in ("f0", "f1"):
        save_state_dict({"a.weight": torch.ones(6, 5), "a.bias": torch.ones(6)}, models / "fis" / name)
    cfg = _config(models, "merge_method: fisher\nmodels:\n  - {model: ft0, fisher: fis/f0/model.safetensors}\n"
                          "  - {model: ft1, fisher: fis/f1/model.safetensors}\n")
    _refused((cfg, models / "fis" / "f0"), "Fisher file 0")
    with pytest.raises(ValueError, match="Fisher file 1"):
        check_separate(models / "fis" / "f1" / "out", [("Fisher file 1", models / "fis" / "f1" / "model.safetensors")])
    assert _cli(cfg, models / "out")[0] == 0


def test_a_non_empty_out_is_refused_and_left_alone(models):
    out = models / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"the user's own weights")
    (out / "notes.txt").write_text("keep me")
    _refused((_config(models), out), "is not empty")
    _refused((_config(models), out, "--overwrite"), "no reprolab merge wrote")
    assert (out / "model.safetensors").read_bytes() == b"the user's own weights"
    assert (out / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_only_an_earlier_merges_files(models):
    out = models / "out"
    sharded = _config(models, "merge_method: task_arithmetic\nbase_model: base\nmodels: [{model: ft0}]\n"
                              "max_shard_size: 100\n", "sharded.yaml")
    assert _cli(sharded, out)[0] == 0
    assert len(list(out.glob("model-*.safetensors"))) > 1
    (out / "README.md").write_text("the user's notes")
    assert _cli(_config(models), out, "--overwrite")[0] == 0
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]  # stale shards removed
    assert not (out / "model.safetensors.index.json").exists()
    assert (out / "README.md").read_text() == "the user's notes"  # never written by a merge: kept
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["config.json", "model.safetensors"]
    # a weights file nobody merged, beside the merge, would be read with it: refused
    (out / "extra.safetensors").write_bytes(b"x")
    _refused((_config(models), out, "--overwrite"), "'extra.safetensors', which no reprolab merge wrote")
    # a user's file under a name this merge writes: refused, not overwritten
    (out / "extra.safetensors").unlink()
    (models / "base" / "tokenizer.json").write_text("{}")
    (out / "tokenizer.json").write_text("the user's tokenizer")
    _refused((_config(models), out, "--overwrite"), "already holds 'tokenizer.json'")
    assert (out / "tokenizer.json").read_text() == "the user's tokenizer"
    assert not list(out.glob(f"{TMP_PREFIX}*"))


@pytest.mark.parametrize("where", ["under a file", "a file", "sys"])
def test_out_that_cannot_be_a_folder_is_one_line(models, where):
    (models / "plain").write_text("a regular file")
    out = {"under a file": models / "plain" / "out", "a file": models / "plain",
           "sys": Path("/sys/reprolab-merge-out")}[where]
    _refused((_config(models), out), "cannot create the folder" if where == "sys" else "is not a folder")
    assert (models / "plain").read_text() == "a regular file"


def test_manifest_that_points_outside_is_refused(models):
    out = models / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"x")
    (out / MANIFEST).write_text(json.dumps({"files": ["../base/model.safetensors", "model.safetensors"]}))
    _refused((_config(models), out, "--overwrite"), "relative file names inside the folder")
    assert (models / "base" / "model.safetensors").is_file()


def test_manifest_entries_through_a_symlinked_subfolder_are_refused(models):
    # the entry is a plain relative name, but its folder is a link out of OUT: --overwrite deleted the file there
    out = models / "out"
    assert _cli(_config(models), out)[0] == 0
    (models / "mine").mkdir()
    (models / "mine" / "thesis.txt").write_text("keep me")
    (out / "sub").symlink_to(models / "mine", target_is_directory=True)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "files": [*manifest["files"], "sub/thesis.txt"]}))
    _refused((_config(models), out, "--overwrite"), "the manifest must list relative file names inside the folder")
    assert (models / "mine" / "thesis.txt").read_text() == "keep me"


def test_a_file_is_never_written_through_a_symlinked_subfolder_of_out(models):
    (models / "base" / "extra").mkdir()
    (models / "base" / "extra" / "notes.txt").write_text("a file the merge copies")
    out = models / "out"
    assert _cli(_config(models), out)[0] == 0
    (out / "extra" / "notes.txt").unlink()
    (out / "extra").rmdir()
    (models / "mine").mkdir()
    (out / "extra").symlink_to(models / "mine", target_is_directory=True)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "files": [f for f in manifest["files"] if "/" not in f]}))
    _refused((_config(models), out, "--overwrite"), "would be written through a symlink")
    assert list((models / "mine").iterdir()) == []


# --- 2. Atomic output -----------------------------------------------------------------------------------------

def test_a_failing_merge_leaves_no_file_behind(models):
    bad = load_state_dict(models / "ft1")
    bad["a.weight"][0, 0] = float("nan")
    save_state_dict(bad, models / "ft1")
    _refused((_config(models), models / "out"), "non-finite")
    assert list((models / "out").iterdir()) == []


NON_FINITE_RESULTS = {  # finite inputs, a NaN or inf from the merge itself: was written, exit 0
    "weights that cancel (multislerp)": "merge_method: multislerp\nmodels: [{model: ft0, parameters: {weight: 1}}, "
                                        "{model: ft1, parameters: {weight: -1}}]\n",
    "zero Fisher weights": "merge_method: fisher\nmodels: [{model: ft0, fisher: ft0/model.safetensors, parameters: "
                           "{weight: 0}}, {model: ft1, fisher: ft1/model.safetensors, parameters: {weight: 0}}]\n",
    "float16 overflow": "merge_method: task_arithmetic\nbase_model: base\ndtype: float16\n"
                        "models: [{model: ft0, parameters: {weight: 100000.0}}]\n",
    # (with _huge_sources: two task vectors of 2e38 whose weighted sum overflows float32)
    "huge TIES task vectors (numpy kernel)": "merge_method: ties\nbase_model: base\nmodels: [{model: ft0}, {model: ft1}]\n",
    "per-tensor weights that cancel (layout path)": "merge_method: multislerp\nmodels: [{model: ft0, parameters: "
                                                    "{weight: [1, 1]}}, {model: ft1, parameters: {weight: -1}}]\n",
}


def _huge_sources(models: Path) -> None:
    base = load_state_dict(models / "base")
    for name in ("ft0", "ft1"):
        save_state_dict({k: v + 2.0e38 for k, v in base.items()}, models / name)  # finite, as the inputs are checked


@pytest.mark.parametrize("case", sorted(NON_FINITE_RESULTS))
def test_a_merge_that_gives_nan_or_inf_is_refused_not_written(models, case):
    if "huge" in case:
        _huge_sources(models)
    line = _refused((_config(models, NON_FINITE_RESULTS[case]), models / "out"), "has non-finite values (NaN or inf)")
    assert "in the merged output" in line and "'a." in line
    assert list((models / "out").iterdir()) == []


def test_a_non_finite_result_is_one_line_without_numpy_warnings(models):
    # the numpy TIES kernel overflowed with RuntimeWarnings printed to stderr before the one-line error
    import subprocess
    import sys
    import warnings

    _huge_sources(models)
    cfg = _config(models, NON_FINITE_RESULTS["huge TIES task vectors (numpy kernel)"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning raised here instead of the ValueError below
        with pytest.raises(ValueError, match="has non-finite values"):
            run_merge(cfg, models / "out", show_progress=False)
    r = subprocess.run([sys.executable, "-m", "reprolab.cli", "merge", str(cfg), str(models / "out2"), "--quiet"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "default"})
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "has non-finite values" in lines[0], r.stdout + r.stderr


def test_weights_whose_float32_sum_overflows_are_refused(models):
    # two weights of 3e38 with normalize: the float32 sum is inf, every task vector divided by it became 0 and the
    # base was written with exit 0
    cfg = _config(models, "merge_method: ties\nbase_model: base\nparameters: {normalize: true}\n"
                          "models: [{model: ft0, parameters: {weight: 3.0e+38}}, {model: ft1, parameters: {weight: 3.0e+38}}]\n")
    _refused((cfg, models / "out"), "their sum overflows float32")
    assert not (models / "out").exists() or list((models / "out").iterdir()) == []


def test_the_in_memory_merge_refuses_a_non_finite_result_too():
    from reprolab.mergers.weights import merge_state_dicts

    a, b = {"w": torch.ones(4, 3)}, {"w": 2 * torch.ones(4, 3)}
    with pytest.raises(ValueError, match=r"tensor 'w' in the merged output .* non-finite"):
        merge_state_dicts(None, [a, b], "multislerp", [1.0, -1.0])


def test_temporaries_of_a_killed_merge_are_removed_by_the_next(models):
    out = models / "out"
    out.mkdir()
    (out / f"{TMP_PREFIX}model.safetensors").write_bytes(b"half a tensor")
    assert _cli(_config(models), out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "config.json", "model.safetensors"]


def test_sigint_or_sigterm_removes_the_temporaries(models, monkeypatch):
    import reprolab.mergers.weights.engine as engine

    real = engine.copy_model_files

    def interrupted(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "copy_model_files", interrupted)
    code, out = _cli(_config(models), models / "out")
    assert code == 130 and "interrupted" in out
    assert list((models / "out").iterdir()) == []


def test_config_json_states_the_dtype_written(models):
    cfg = _config(models, "merge_method: linear\nmodels: [{model: ft0}, {model: ft1}]\nout_dtype: bfloat16\n")
    assert _cli(cfg, models / "out")[0] == 0
    assert json.loads((models / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert load_file(models / "out" / "model.safetensors")["a.weight"].dtype == torch.bfloat16


# --- 3. No escape from a model folder -------------------------------------------------------------------------

def test_a_symlink_out_of_the_base_folder_is_refused(models):
    secret = models / "secret.txt"
    secret.write_text("private")
    (models / "base" / "tokenizer.json").symlink_to(secret)
    line = _refused((_config(models), models / "out"), "outside the model folder")
    assert "tokenizer.json" in line
    assert not (models / "out").exists() or not any((models / "out").iterdir())


def test_a_symlink_inside_the_base_folder_is_followed(models):
    (models / "base" / "real_vocab.txt").write_text("vocab")
    (models / "base" / "vocab.txt").symlink_to(models / "base" / "real_vocab.txt")
    assert _cli(_config(models), models / "out")[0] == 0
    assert (models / "out" / "vocab.txt").read_text() == "vocab" and not (models / "out" / "vocab.txt").is_symlink()


def test_a_weight_map_entry_outside_the_folder_is_refused(models):
    save_state_dict(load_state_dict(models / "ft0"), models / "sharded", max_shard_bytes=60)
    index = json.loads((models / "sharded" / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../ft1/model.safetensors"
    (models / "sharded" / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"weight_map entry '\.\./ft1/model\.safetensors' resolves to .* outside"):
        Checkpoint(models / "sharded")
    cfg = _config(models, "merge_method: task_arithmetic\nbase_model: base\nmodels: [{model: sharded}]\n")
    _refused((cfg, models / "out"), "outside the model folder")


def test_hub_cache_snapshot_links_into_blobs_are_allowed(models, tmp_path):
    repo = tmp_path / "hub" / "models--toy"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    os.replace(models / "ft0" / "model.safetensors", repo / "blobs" / "0f1e")
    (snap / "model.safetensors").symlink_to(Path("../../blobs/0f1e"))
    assert Checkpoint(snap).keys() == ["a.weight", "a.bias"]


def _sharded_index(models: Path) -> tuple[Path, dict]:
    save_state_dict(load_state_dict(models / "ft0"), models / "sharded", max_shard_bytes=60)
    (models / "sharded" / "config.json").write_text((models / "ft0" / "config.json").read_text())
    index = models / "sharded" / "model.safetensors.index.json"
    return index, json.loads(index.read_text())


@pytest.mark.parametrize("case", ["unlisted", "listed but absent", "listed in the wrong shard"])
def test_an_index_that_disagrees_with_its_shards_is_refused(models, case):
    # mergekit reads the tensors the index lists, reprolab the shards' headers: where they disagree, the two
    # would merge different models from one folder
    index, data = _sharded_index(models)
    wm = data["weight_map"]
    shard_of_weight = wm["a.weight"]
    if case == "unlisted":  # one shard holding both tensors, the index listing one
        one = models / "sharded" / "model-00001-of-00001.safetensors"
        os.replace(models / "ft0" / "model.safetensors", one)
        for f in set(wm.values()):
            (models / "sharded" / f).unlink()
        wm.clear()
        wm["a.bias"] = one.name
    elif case == "listed but absent":
        wm["ghost.weight"] = shard_of_weight
    else:
        wm["a.weight"] = next(f for f in set(wm.values()) if f != shard_of_weight)
    index.write_text(json.dumps(data))
    match = "is not listed in weight_map" if case == "unlisted" else "which does not hold it"
    with pytest.raises(ValueError, match=match):
        Checkpoint(models / "sharded")
    cfg = _config(models, "merge_method: task_arithmetic\nbase_model: base\nmodels: [{model: sharded}]\n")
    assert str(index) in _refused((cfg, models / "out"), match)


def test_a_shard_the_index_spells_two_ways_is_read_once(models):
    index, data = _sharded_index(models)
    first = data["weight_map"]["a.weight"]
    data["weight_map"]["a.weight"] = str(models / "sharded" / first)  # absolute, inside the folder
    index.write_text(json.dumps(data))
    assert sorted(Checkpoint(models / "sharded").keys()) == ["a.bias", "a.weight"]


def test_a_fifo_in_the_base_folder_is_refused_not_opened(models):
    os.mkfifo(models / "base" / "special.txt")  # opening it to copy would block forever
    line = _refused((_config(models), models / "out"), "is not a regular file")
    assert "special.txt" in line


# --- 4. Header validation -------------------------------------------------------------------------------------

def _raw_file(path: Path, header: object, data: bytes = b"\0" * 120) -> Path:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _entry(begin: object = 0, end: object = 120, shape: object = (6, 5), dtype: object = "F32") -> dict:
    return {"dtype": dtype, "shape": list(shape) if isinstance(shape, tuple) else shape, "data_offsets": [begin, end]}


BAD_HEADERS = {
    "a list": ([_entry()], "not a mapping"),
    "entry not a mapping": ({"a.weight": [1, 2]}, "'a.weight': header entry is a list"),
    "no shape": ({"a.weight": {"dtype": "F32", "data_offsets": [0, 120]}}, "missing field(s) ['shape']"),
    "negative dimension": ({"a.weight": _entry(shape=(-6, -5))}, "non-negative integers"),
    "negative offsets": ({"a.weight": _entry(-120, 0)}, "two ordered non-negative"),
    "overlapping": ({"a.weight": _entry(0, 120), "a.bias": {**_entry(96, 120, (6,))}}, "overlaps"),
    "string offsets": ({"a.weight": _entry("0", "120")}, "two ordered non-negative"),
    "unknown dtype": ({"a.weight": _entry(dtype="F33")}, "unknown dtype 'F33'"),
    "dimension past 2^64": ({"a.weight": _entry(), "z": _entry(120, 120, (2**64, 0))}, "is too large"),
    "dimensions multiplying past 2^64": ({"a.weight": _entry(), "z": _entry(120, 120, (2**32, 2**32, 0))},
                                         "is too large"),
    "strides past 2^63": ({"a.weight": _entry(), "z": _entry(120, 120, (0, 2**40, 2**40))}, "is too large"),
    "size mismatch": ({"a.weight": _entry(0, 120, (6, 6))}, "needs 144"),
    "gap": ({"a.weight": _entry(24, 144)}, "leaves a gap"),
    "past the end": ({"a.weight": _entry(0, 240, (12, 5))}, "file has"),
    "bad metadata": ({"__metadata__": {"a": 1}, "a.weight": _entry()}, "__metadata__"),
    "nested too deeply": (b"[" * 100_000 + b"]" * 100_000, "corrupt safetensors header"),
    "duplicate key": (b'{"a.weight":' + json.dumps(_entry()).encode() + b',"a.weight":'
                      + json.dumps(_entry()).encode() + b"}", "appears twice"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_bad_headers_are_one_line_errors_naming_file_and_tensor(models, case):
    header, match = BAD_HEADERS[case]
    f = _raw_file(models / "ft1" / "model.safetensors", header)
    with pytest.raises(ValueError, match=r"model\.safetensors") as err:
        read_header(f)
    assert match in str(err.value) and "\n" not in str(err.value)
    line = _refused((_config(models), models / "out"), match)
    assert str(f) in line or str(f.resolve()) in line
    assert not (models / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("length,match", [(2**40, "exceeds 104857600 bytes"), (500, "does not fit the file")])
def test_a_header_length_past_the_limit_or_the_file_is_refused_before_reading(models, length, match):
    f = models / "ft1" / "model.safetensors"
    f.write_bytes(struct.pack("<Q", length) + b"{}")
    with pytest.raises(ValueError, match=match):
        read_header(f)
    _refused((_config(models), models / "out"), match)


@pytest.mark.parametrize("where,match", [("base/config.json", "not valid JSON"),
                                         ("ft1/model.safetensors.index.json", "not a valid safetensors index"),
                                         ("out/" + MANIFEST, "unreadable merge manifest")])
def test_json_nested_too_deeply_is_one_line(models, where, match):
    if where.startswith("out/"):
        (models / "out").mkdir()
        (models / "out" / "model.safetensors").write_bytes(b"x")
    (models / where).write_text("[" * 100_000 + "]" * 100_000)  # past Python's recursion limit
    line = _refused((_config(models), models / "out", "--overwrite"), match)
    assert where.split("/")[-1] in line


def test_the_reference_library_rejects_the_same_offsets(models):
    from safetensors import safe_open

    for case in ("negative offsets", "overlapping", "gap", "dimension past 2^64", "dimensions multiplying past 2^64"):
        f = _raw_file(models / "x.safetensors", BAD_HEADERS[case][0])
        with pytest.raises(Exception), safe_open(f, "pt") as fh:  # noqa: B017 - the library's own error types
            fh.keys()


# --- 5. Config validation -------------------------------------------------------------------------------------

BAD_CONFIGS = {
    "weight null": ("models: [{model: ft0, parameters: {weight: null}}, {model: ft1}]", "models[0] (ft0): parameters.weight must be a number"),
    "parameters a list": ("models: [{model: ft0}]\nparameters: [1, 2]", "parameters must be a mapping"),
    "model parameters a list": ("models: [{model: ft0, parameters: [weight, 1]}]", "models[0] (ft0): parameters must be a mapping"),
    "lambda abc": ("models: [{model: ft0}]\nparameters: {lambda: abc}", "parameters.lambda must be a number, got 'abc'"),
    "normalize no": ("models: [{model: ft0}]\nparameters: {normalize: \"no\"}", "parameters.normalize must be a YAML boolean"),
    "weight inf": ("models: [{model: ft0, parameters: {weight: .inf}}]", "parameters.weight must be a finite number"),
    "density 0": ("models: [{model: ft0, parameters: {density: 0}}]", "parameters.density must lie in (0, 1]"),
    "tie_break": ("models: [{model: ft0}]\nparameters: {tie_break: random}", "parameters.tie_break must be one of"),
    "seed bool": ("models: [{model: ft0}]\nseed: true", "seed must be an integer"),
    "allow_pickle string": ("models: [{model: ft0}]\nallow_pickle: \"yes\"", "allow_pickle must be a YAML boolean"),
    "lambda past float range": ("models: [{model: ft0}]\nparameters: {lambda: 1%s}" % ("0" * 400),
                                "parameters.lambda must be a finite number"),
    "shard size past float range": ("models: [{model: ft0}]\nmax_shard_size: '1%sTB'" % ("0" * 400),
                                    "max_shard_size must be a positive"),
    "fisher file for another method": ("models: [{model: ft0, fisher: ft0/model.safetensors}]",
                                       "models[0] (ft0): fisher: method 'ties' does not read Fisher files"),
    "shard size zero": ("models: [{model: ft0}]\nmax_shard_size: 0", "max_shard_size must be a positive"),
    "tokenizer and tokenizer_source": ("models: [{model: ft0}]\ntokenizer_source: union\ntokenizer: {source: base}",
                                       "give `tokenizer_source` or `tokenizer`, not both"),
    "tokenizer sub-option": ("models: [{model: ft0}]\ntokenizer: {pad_to_multiple: 8}", "tokenizer: unknown key(s) ['pad_to_multiple']"),
    "chat_template name": ("models: [{model: ft0}]\nchat_template: llama3", "chat_template 'llama3': only the built-in names"),
    "method a list": ("models: [{model: ft0}]\nmerge_method: [ties]", "merge_method must be a non-empty string"),
    "per-model normalize": ("models: [{model: ft0, parameters: {normalize: true}}, {model: ft1}]",
                            "models[0] (ft0): parameters.normalize is one setting for the whole merge"),
    "per-model lambda": ("models: [{model: ft0}, {model: ft1, parameters: {lambda: 0.5}}]",
                         "models[1] (ft1): parameters.lambda is one setting for the whole merge"),
    "per-model int8_mask": ("merge_method: linear\nmodels: [{model: ft0, parameters: {int8_mask: true}}, {model: ft1}]",
                            "models[0] (ft0): parameters.int8_mask is one setting for the whole merge"),
    "modules a list": ("models: [{model: ft0}]\nmodules: []", "`modules` must be a mapping (module name: definition), got []"),
    "modules false": ("models: [{model: ft0}]\nmodules: false", "`modules` must be a mapping"),
    "method unknown": ("models: [{model: ft0}]\nmerge_method: tiez", "merge_method: unknown merge method 'tiez'"),
    "dtype a number": ("models: [{model: ft0}]\ndtype: 16", "dtype must be a non-empty string"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_fields_are_one_line_errors_naming_file_model_and_field(models, case):
    body, match = BAD_CONFIGS[case]
    text = body if "merge_method" in body else "merge_method: ties\n" + body
    cfg = _config(models, f"base_model: base\n{text}\n")
    with pytest.raises(ValueError) as err:
        run_merge(cfg, models / "out", show_progress=False)
    assert match in str(err.value) and str(cfg) in str(err.value), str(err.value)
    _refused((cfg, models / "out"), match)


def test_a_binary_config_names_the_file(models):
    cfg = models / "merge.yaml"
    cfg.write_bytes(b"\xff\xfe\x00binary\x89PNG")
    line = _refused((cfg, models / "out"), "not a UTF-8 text file")
    assert str(cfg) in line


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_config_that_is_not_a_regular_file_is_refused_not_read(models, kind):
    cfg = Path("/dev/zero") if kind == "device" else models / "merge.fifo"
    if kind == "fifo":
        os.mkfifo(cfg)  # no writer: opening it would wait forever; /dev/zero would be read until memory runs out
    line = _refused((cfg, models / "out"), "is not a regular file")
    assert str(cfg) in line


@pytest.mark.parametrize("modules", ["{}", "null"])
def test_empty_modules_is_no_modules_as_in_mergekit(models, modules):
    # mergekit 0.1.5 validates `modules: {}` and `modules: null` and reads both as absent (an empty mapping is falsy)
    cfg = _config(models, f"merge_method: ties\nbase_model: base\nmodels: [{{model: ft0}}, {{model: ft1}}]\n"
                          f"modules: {modules}\n")
    assert _cli(cfg, models / "out")[0] == 0


def test_real_yaml_booleans_are_accepted(models):
    cfg = _config(models, "merge_method: ties\nbase_model: base\nmodels: [{model: ft0}, {model: ft1}]\n"
                          "parameters: {normalize: no, int8_mask: yes, density: 1}\n")
    assert _cli(cfg, models / "out")[0] == 0


def test_yaml_1_1_exponent_strings_are_numbers_in_number_fields(models):
    # PyYAML (YAML 1.1) reads an unquoted 1e-1 or 1.0e0 (an exponent without a dot or a sign) as a string; YAML 1.2
    # and mergekit's pydantic read the number (its output for `density: 1e-1` equals that for 0.1), and so does
    # the config loader (yamlsafe retags such plain scalars). A quoted number stays a string, refused as one.
    from reprolab.mergers.weights.params import check_param
    from reprolab.yamlsafe import load_all

    assert load_all("a: 1e-1\nb: -2.5E2\nc: .5e1\nd: '1e-1'\ne: 1e\n") == [
        {"a": 0.1, "b": -250.0, "c": 5.0, "d": "1e-1", "e": "1e"}
    ]
    for text in ("0.5", "3", "1e-3", "1.0e-3", "1e", "0x10", "1_000", "inf", "nan", "e3", "1e-1x"):
        with pytest.raises(ValueError, match=f"cfg: parameters.weight must be a number, got '{text}'"):
            check_param("parameters.weight", text, 1.0, "cfg")
    outs = []
    for density, weight in (("1e-1", "[1.0e0, 5e-1]"), ("0.1", "[1.0, 0.5]")):
        out = models / f"out-{density}"
        cfg = _config(models, "merge_method: ties\nbase_model: base\n"
                              f"models: [{{model: ft0, parameters: {{density: {density}, weight: {weight}}}}}, "
                              "{model: ft1}]\n")
        assert _cli(cfg, out)[0] == 0
        outs.append((out / "model.safetensors").read_bytes())
    assert outs[0] == outs[1]
    cfg = _config(models, "merge_method: ties\nbase_model: base\nmodels: [{model: ft0, parameters: {density: 1e3}}]\n")
    _refused((cfg, models / "out"), "models[0] (ft0): parameters.density must lie in (0, 1], got 1000.0")


def test_output_folder_unit_rules(tmp_path):
    out = OutputFolder(tmp_path / "o")
    tmp = out.temp("model.safetensors")
    tmp.write_bytes(b"data")
    assert not (tmp_path / "o" / "model.safetensors").exists()
    out.commit()
    assert (tmp_path / "o" / "model.safetensors").read_bytes() == b"data"
    with pytest.raises(ValueError, match="is not empty"):
        OutputFolder(tmp_path / "o")
    again = OutputFolder(tmp_path / "o", overwrite=True)
    with pytest.raises(ValueError, match="plain relative name"):
        again.temp("../escape")
    again.temp("config.json").write_text("{}")
    again.abort()
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [MANIFEST, "model.safetensors"]


# --- multi-document (mergekit-multi) configs (issue 14, item 5) -----------------------------------------------

MULTI = """name: step1
merge_method: task_arithmetic
base_model: base
models: [{model: ft0}]
---
merge_method: linear
models: [{model: step1, parameters: {weight: 0.5}}, {model: ft1, parameters: {weight: 0.5}}]
"""


def test_a_multi_document_config_runs_in_order_like_mergekit_multi(models):
    cfg = _config(models, MULTI, "multi.yaml")
    assert _cli(cfg, models / "out", "--intermediate-dir", models / "inter")[0] == 0
    step1 = _config(models, "merge_method: task_arithmetic\nbase_model: base\nmodels: [{model: ft0}]\n", "s1.yaml")
    run_merge(step1, models / "s1", show_progress=False)
    final = _config(models, "merge_method: linear\nmodels: [{model: s1, parameters: {weight: 0.5}}, "
                            "{model: ft1, parameters: {weight: 0.5}}]\n", "s2.yaml")
    run_merge(final, models / "s2", show_progress=False)
    assert _snapshot(models / "inter" / "step1") == _snapshot(models / "s1")
    got, want = load_file(models / "out" / "model.safetensors"), load_file(models / "s2" / "model.safetensors")
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("text,args,match", [
    (MULTI, (), "pass --intermediate-dir"),
    (MULTI.replace("name: step1", "name: step1\nparameters: {lambda: x}"), ("--intermediate-dir", "inter"),
     "[step1]: parameters.lambda must be a number"),
    (MULTI + "---\nname: step1\nmerge_method: linear\nmodels: [{model: ft0}]\n", ("--intermediate-dir", "inter"),
     "merge name 'step1' appears twice"),
    (MULTI.replace("models: [{model: ft0}]", "models: [{model: later}]") + "---\nname: later\nmerge_method: linear\n"
     "models: [{model: step1}]\n", ("--intermediate-dir", "inter"), "circular dependency"),
    (MULTI.replace("models: [{model: step1,", "name: two\nmodels: [{model: step1,"), ("--intermediate-dir", "inter"),
     "no unnamed document"),
    (MULTI + "---\nname: extra\nmerge_method: linear\nmodels: [{model: nowhere}]\n", ("--intermediate-dir", "inter"),
     "does not exist"),
    (MULTI + "---\nmerge_method: linear\nmodels: [{model: ft0}]\n", ("--intermediate-dir", "inter"),
     "several unnamed (final) merges"),
])
def test_bad_multi_document_configs_fail_before_any_merge(models, text, args, match):
    cfg = _config(models, text, "multi.yaml")
    args = tuple(models / a if a == "inter" else a for a in args)
    _refused((cfg, models / "out", *args), match)
    assert not (models / "inter").exists() and not (models / "out").exists()


# --- one merge at a time per OUT (docs/merging.md, rule 6) ----------------------------------------------------

def test_a_second_output_folder_on_the_same_out_is_refused_until_the_first_is_done(tmp_path):
    first = OutputFolder(tmp_path / "o")
    first.temp("model.safetensors").write_bytes(b"half written")
    with pytest.raises(ValueError, match=f"output folder {tmp_path / 'o'} is in use by another reprolab merge"):
        OutputFolder(tmp_path / "o")
    assert (tmp_path / "o" / f"{TMP_PREFIX}model.safetensors").read_bytes() == b"half written"  # untouched
    first.commit()
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [MANIFEST, "model.safetensors"]  # lock removed
    OutputFolder(tmp_path / "o", overwrite=True).abort()  # free again
    with pytest.raises(ValueError, match="is not empty"):  # a refusal releases the lock too
        OutputFolder(tmp_path / "o")
    OutputFolder(tmp_path / "o", overwrite=True).abort()


def test_a_merge_into_an_out_another_merge_is_writing_is_refused(models):
    out = models / "out"
    holder = OutputFolder(out)  # a merge in progress (its temporaries are in OUT)
    holder.temp("model.safetensors").write_bytes(b"in progress")
    line = _refused((_config(models), out), "is in use by another reprolab merge")
    assert str(out) in line
    assert (out / f"{TMP_PREFIX}model.safetensors").read_bytes() == b"in progress"
    holder.abort()
    assert _cli(_config(models), out)[0] == 0


def test_the_lock_excludes_another_process(models):
    import subprocess
    import sys

    out = models / "out"
    out.mkdir()
    hold = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", hold, str(out / LOCK)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        _refused((_config(models), out), f"output folder {out} is in use by another reprolab merge")
    finally:
        proc.communicate("")
    assert _cli(_config(models), out)[0] == 0  # the holder exited: the lock it left behind is taken over
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "config.json", "model.safetensors"]


@pytest.mark.parametrize("layout", [False, True])
def test_an_out_dtype_wider_than_the_merge_dtype_holds_the_merge_dtypes_values(models, layout):
    # mergekit rounds the result to `dtype`, then casts to `out_dtype`; we wrote the unrounded float32 result, so
    # dtype: float16 + out_dtype: float32 differed from mergekit's output in 59% of entries
    weight = "[1.0, 0.5]" if layout else "1.0"  # a gradient takes the layout path
    outs = {}
    for out_dtype in ("float16", "float32"):
        cfg = _config(models, f"merge_method: linear\ndtype: float16\nout_dtype: {out_dtype}\n"
                              f"models: [{{model: ft0, parameters: {{weight: {weight}}}}}, {{model: ft1}}]\n",
                      name=f"m-{out_dtype}.yaml")
        assert _cli(cfg, models / f"out-{out_dtype}")[0] == 0
        outs[out_dtype] = load_file(models / f"out-{out_dtype}" / "model.safetensors")
    for name, wide in outs["float32"].items():
        assert wide.dtype == torch.float32
        assert torch.equal(wide, outs["float16"][name].to(torch.float32)), name
