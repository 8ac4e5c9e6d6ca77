"""SIGKILL at several moments of a merge of a generated ~100 MB model: no file under a final name is ever
incomplete, and the next merge into that OUT removes the temporaries and completes (issue 8, item 2)."""

from __future__ import annotations

import json
import multiprocessing
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reprolab.mergers.weights import save_state_dict
from reprolab.mergers.weights.output import LOCK, MANIFEST, TMP_PREFIX
from reprolab.mergers.weights.run import run_merge

SHAPES = {f"layers.{i}.weight": (2048, 2048) for i in range(6)}  # 6 x 16 MiB = 96 MiB of float32 per model
# Children fork from a forkserver that imported torch once (a fresh interpreter per kill would cost seconds).
# With kill_after_renames=n a child SIGKILLs itself right after the n-th rename of the commit (the renames
# take microseconds, too short a window to hit from outside).
CHILD = """
import os, signal
from pathlib import Path
import reprolab.mergers.weights.output as output
if kill_after_renames:
    real, calls = output.os.replace, []
    def replace(a, b):
        real(a, b)
        calls.append(b)
        if len(calls) == kill_after_renames:
            os.kill(os.getpid(), signal.SIGKILL)
    output.os.replace = replace
from reprolab.mergers.weights.run import run_merge
run_merge(Path(config), Path(out), show_progress=False, overwrite=True)
"""


@pytest.fixture(scope="module")
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["reprolab.mergers.weights.run"])
    return ctx


@pytest.fixture(scope="module")
def big_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    g = torch.Generator().manual_seed(0)
    base = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}
    save_state_dict(base, root / "base")
    save_state_dict({k: v + 0.01 for k, v in base.items()}, root / "ft")
    for name in ("base", "ft"):
        (root / name / "config.json").write_text(json.dumps({"model_type": "toy"}))
    (root / "merge.yaml").write_text("merge_method: task_arithmetic\nbase_model: base\nmodels: [{model: ft}]\n")
    return root


def _child(ctx, root: Path, out: Path, kill_after_renames: int = 0):
    scope = {"__name__": "merge_child", "config": str(root / "merge.yaml"), "out": str(out),
             "kill_after_renames": kill_after_renames}
    proc = ctx.Process(target=exec, args=(CHILD, scope))
    proc.start()
    return proc


def _assert_no_incomplete_final_file(out: Path) -> list[str]:
    finals = []
    for p in sorted(out.rglob("*")) if out.exists() else []:
        if not p.is_file() or p.name.startswith(TMP_PREFIX) or p.name == LOCK:
            continue  # temporaries, and the empty lock file a killed merge leaves (the next one reuses it)
        finals.append(p.name)
        if p.suffix == ".safetensors":
            tensors = load_file(p)  # the reference reader checks that every byte range is present
            assert set(tensors) == set(SHAPES), f"{p.name} incomplete"
        else:
            json.loads(p.read_text())  # config.json, the manifest: complete JSON
    return finals


def _poll_kill(proc: multiprocessing.Process, out: Path, fraction: float) -> bool:
    """SIGKILL once OUT's temporary weights file holds ``fraction`` of its bytes (0: as soon as OUT exists)."""
    target = fraction * sum(4 * a * b for a, b in SHAPES.values())
    tmp = out / f"{TMP_PREFIX}model.safetensors"
    deadline = time.monotonic() + 60
    while proc.is_alive() and time.monotonic() < deadline:
        try:
            if (fraction == 0 and out.exists()) or (fraction > 0 and tmp.stat().st_size >= target):
                proc.kill()
                break
        except FileNotFoundError:
            pass
        time.sleep(0.0005)
    proc.join()
    return proc.exitcode == -signal.SIGKILL


def test_sigkill_at_any_moment_leaves_no_incomplete_file(big_models, forkserver, tmp_path):
    out = tmp_path / "out"
    killed = []
    for fraction in (0.0, 0.3, 0.9):  # while reading the headers, mid-weights, nearly all written
        killed.append(_poll_kill(_child(forkserver, big_models, out), out, fraction))
        assert _assert_no_incomplete_final_file(out) == [] or not killed[-1]
    for n in (1, 2):  # mid-commit: after the manifest's rename, after the weights' (config.json not yet renamed)
        proc = _child(forkserver, big_models, out, kill_after_renames=n)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        finals = _assert_no_incomplete_final_file(out)
        assert MANIFEST in finals and "config.json" not in finals
        assert ("model.safetensors" in finals) == (n == 2)
    assert sum(killed) >= 2, f"the merge finished before most kills landed ({killed}); the test did not test"
    # the next merge into that OUT removes the temporaries and completes (base + 0.01: task arithmetic, weight 1)
    run_merge(big_models / "merge.yaml", out, show_progress=False, overwrite=True)
    assert not list(out.rglob(f"{TMP_PREFIX}*"))
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "config.json", "model.safetensors"]
    got, ft = load_file(out / "model.safetensors"), load_file(big_models / "ft" / "model.safetensors")
    assert all(torch.allclose(got[k], ft[k], atol=1e-6) for k in SHAPES)


def test_sigterm_removes_the_temporaries(big_models, forkserver, tmp_path):
    out = tmp_path / "out"
    proc = _child(forkserver, big_models, out)
    tmp = out / f"{TMP_PREFIX}model.safetensors"
    deadline = time.monotonic() + 60
    while proc.is_alive() and time.monotonic() < deadline and not (tmp.exists() and tmp.stat().st_size > 0):
        time.sleep(0.0005)
    proc.terminate()  # SIGTERM
    proc.join()
    if proc.exitcode == 0:
        pytest.fail("the merge finished before SIGTERM arrived; the test did not test")
    assert not list(out.rglob(f"{TMP_PREFIX}*")) and not list(out.glob("*.safetensors"))
