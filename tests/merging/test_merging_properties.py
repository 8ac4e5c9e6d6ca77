"""Hypothesis properties of the mergers: identity, idempotence, order invariance, TIES(1, one source) = TA;
and corrupted safetensors headers never give a traceback nor a merged file."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprolab.cli import cli
from reprolab.mergers.weights import Checkpoint, merge_state_dicts

DETERMINISTIC = ["linear", "task_arithmetic", "ties", "directional_consensus", "neuromerging"]
# Methods for which merging one model (weight 1) returns it: sparsifying ones only at density 1.
ONE_MODEL = {"linear": {}, "task_arithmetic": {}, "ties": {"density": 1.0}, "directional_consensus": {},
             "dare_linear": {"density": 1.0}, "dare_ties": {"density": 1.0}}

shapes = st.sampled_from([(3,), (4, 5), (2, 3, 2)])


def _sd(shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return {"layer.weight": torch.randn(shape, generator=g) * scale, "bias": torch.randn(shape[0], generator=g)}


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), method=st.sampled_from(sorted(ONE_MODEL)))
def test_merging_one_model_returns_it(shape, seed, method):
    base, src = _sd(shape, seed), _sd(shape, seed + 1)
    out = merge_state_dicts(base, [src], method, [1.0], params=ONE_MODEL[method])
    for k in src:
        assert torch.allclose(out[k], src[k], atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), k=st.integers(2, 4), method=st.sampled_from(DETERMINISTIC))
def test_merging_identical_sources_returns_that_source(shape, seed, k, method):
    base, src = _sd(shape, seed), _sd(shape, seed + 1)
    params = {"density": 1.0} if method in ("ties", "neuromerging") else {}
    if method == "neuromerging":
        return  # drops the part parallel to the pretrained rows by design, so it is not idempotent
    w = [1.0 / k] * k if method == "task_arithmetic" else [1.0] * k
    out = merge_state_dicts(base, [src] * k, method, w, params=params)
    for name in src:
        assert torch.allclose(out[name], src[name], atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), perm_seed=st.integers(0, 100), method=st.sampled_from(DETERMINISTIC),
       density=st.sampled_from([0.3, 0.7, 1.0]))
def test_results_do_not_depend_on_source_order(shape, seed, perm_seed, method, density):
    base = _sd(shape, seed)
    srcs = [_sd(shape, seed + i + 1) for i in range(3)]
    w = [0.2, 0.3, 0.5]
    params = {"density": density} if method in ("ties", "neuromerging") else {}
    perm = torch.randperm(3, generator=torch.Generator().manual_seed(perm_seed)).tolist()
    a = merge_state_dicts(base, srcs, method, w, params=params)
    b = merge_state_dicts(base, [srcs[i] for i in perm], method, [w[i] for i in perm], params=params)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), w=st.floats(0.1, 3.0), lam=st.floats(0.1, 2.0))
def test_ties_density_one_single_source_is_task_arithmetic(shape, seed, w, lam):
    base, src = _sd(shape, seed), _sd(shape, seed + 1)
    ties = merge_state_dicts(base, [src], "ties", [w], params={"density": 1.0, "normalize": False, "lambda": lam})
    ta = merge_state_dicts(base, [src], "task_arithmetic", [w], params={"lambda": lam})
    for k in ta:
        assert torch.allclose(ties[k], ta[k], atol=1e-5)


# --- corrupted safetensors headers (issue 8): never a traceback, never a merged file from a bad header ---------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
_FIELDS = ("dtype", "shape", "data_offsets")


def _valid_file() -> tuple[dict, bytes]:
    g = torch.Generator().manual_seed(1)
    sd = {"layer.weight": torch.randn(4, 5, generator=g), "bias": torch.randn(4, generator=g)}
    import safetensors.torch

    blob = safetensors.torch.save(sd)
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


@st.composite
def corrupted(draw) -> bytes:
    header, data = _valid_file()
    kind = draw(st.sampled_from(["field", "drop", "add", "offset", "entry", "bytes", "truncate", "length"]))
    name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    if kind == "field":
        header[name][draw(st.sampled_from(_FIELDS))] = draw(_JSON)
    elif kind == "drop":
        del header[name][draw(st.sampled_from(_FIELDS))]
    elif kind == "add":
        header[draw(st.text(max_size=8))] = draw(_JSON)
    elif kind == "offset":
        header[name]["data_offsets"][draw(st.integers(0, 1))] += draw(st.integers(-100, 100))
    elif kind == "entry":
        header[name] = draw(_JSON)
    raw = json.dumps(header).encode()
    blob = bytearray(len(raw).to_bytes(8, "little") + raw + data)
    if kind == "bytes":
        for _ in range(draw(st.integers(1, 4))):
            blob[draw(st.integers(8, 8 + len(raw) - 1))] = draw(st.integers(0, 255))
    elif kind == "truncate":
        del blob[draw(st.integers(0, len(blob) - 1)):]
    elif kind == "length":
        blob[:8] = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
    return bytes(blob)


def _reference_reads(path: Path) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception:  # the reference library refuses the file
        return None


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=corrupted())
def test_corrupted_headers_never_traceback_nor_merge_garbage(blob):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        header, data = _valid_file()
        raw = json.dumps(header).encode()
        for name in ("base", "ft"):
            (root / name).mkdir()
            (root / name / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + data)
        (root / "ft" / "model.safetensors").write_bytes(blob)
        (root / "m.yaml").write_text("merge_method: linear\nmodels: [{model: base}, {model: ft}]\n")
        r = CliRunner().invoke(cli, ["merge", str(root / "m.yaml"), str(root / "out"), "--quiet"])
        assert r.exception is None or isinstance(r.exception, SystemExit), f"traceback: {r.exception!r}"
        if r.exit_code != 0:
            lines = r.output.strip().splitlines()
            # one line naming the corrupted file (or its folder, when the header is valid but the tensors differ)
            assert len(lines) == 1 and lines[0].startswith("Error: ") and str(root / "ft") in lines[0], r.output
            assert not (root / "out" / "model.safetensors").exists()
            return
        ref = _reference_reads(root / "ft" / "model.safetensors")
        assert ref is not None, "merged a file the safetensors library rejects"
        ours = Checkpoint(root / "ft")
        assert set(ours.keys()) == set(ref) and all(torch.equal(ours.get(k), ref[k]) for k in ref)
