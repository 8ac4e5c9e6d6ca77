"""TIES (density 0.2, normalize) of three 106 M-parameter float32 Llama-shaped checkpoints onto a base:
reprolab's streaming merge against mergekit 0.1.5 on the same files, side by side.

mergekit is a benchmark-only dependency in its own venv: set REPROLAB_MERGEKIT_PYTHON to that venv's python
(default /work/venv-mergekit/bin/python). Without it the mergekit half skips with the reason. Both merges run
as subprocesses so wall time and peak RSS (ru_maxrss of the child) are measured the same way.

Targets (issues 4 and 8): >= 15x faster than mergekit at the same thread setting, peak RSS <= 0.3x mergekit's and
about (models + 2) x the largest tensor plus the interpreter, outputs equal within 1e-6 relative, and atomic
output (fsync of every file, manifest, renames: the commit of ``output.OutputFolder``) <= 5% of the wall time. Reported in
benchmark.extra_info: median wall and CPU time of ROUNDS reprolab runs, peak RSS, mergekit's figures, speed-up.
Equality: tau is quantised to the base's ulps, so in a few tensors entries tied at the trim threshold straddle
the cut; mergekit keeps whichever ``torch.argsort`` happens to put first. The default ``tie_break: index`` is
fast and differs from mergekit only in those entries; ``tie_break: mergekit`` is bit-identical and is the run
the equality assertion uses (its time is reported too). Correctness is always asserted; a speed or memory target
not recorded as met reliably is a strict xfail carrying the measured figures.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reprolab.mergers.weights.io import save_state_dict

HIDDEN, INTER, LAYERS, VOCAB = 768, 2048, 8, 32000
CACHE = Path(__file__).resolve().parents[2] / ".reprolab" / "bench" / "llama106m"
MERGEKIT_PY = os.environ.get("REPROLAB_MERGEKIT_PYTHON", "/work/venv-mergekit/bin/python")
# Both tools run with the same thread count. Default: torch's own default (unset OMP/MKL variables), the setting
# the issue's ~73 s for mergekit was taken with; REPROLAB_BENCH_THREADS=1 pins both to one thread.
THREADS = os.environ.get("REPROLAB_BENCH_THREADS", "default")
ROUNDS = int(os.environ.get("REPROLAB_BENCH_ROUNDS", "3"))
# Targets (issue 4). Whether each is met reliably on this shared 2-core machine was decided from the runs recorded
# in docs/merging.md, not from the run at hand: a target not met reliably is a strict xfail, so a run that does
# meet it fails and asks for the record to be updated (like a claim's recorded verdict).
SPEEDUP_TARGET = 15.0
SPEEDUP_MET_RELIABLY = False
RSS_RATIO_TARGET = 0.3  # peak RSS at most this fraction of mergekit's (issue 8)
RSS_RATIO_MET_RELIABLY = False
ATOMIC_COST_TARGET = 0.05  # commit (fsync + renames) as a fraction of reprolab's wall time (issue 8)
ATOMIC_COST_MET_RELIABLY = True
# Peak RSS bound: (models + 2) x the largest tensor, plus the interpreter with torch and numpy (~0.22 GB here).
RSS_CONSTANT_GB = 0.3
RSS_BOUND_MET_RELIABLY = True

CONFIG = """models:
  - model: {d}/ft0
    parameters: {{weight: 1.0, density: 0.2}}
  - model: {d}/ft1
    parameters: {{weight: 1.0, density: 0.2}}
  - model: {d}/ft2
    parameters: {{weight: 1.0, density: 0.2}}
merge_method: ties
base_model: {d}/base
parameters: {{normalize: true}}
dtype: float32
"""


def _shapes() -> dict[str, tuple[int, ...]]:
    s = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            s[p + f"self_attn.{n}.weight"] = (HIDDEN, HIDDEN)
        s[p + "mlp.gate_proj.weight"] = (INTER, HIDDEN)
        s[p + "mlp.up_proj.weight"] = (INTER, HIDDEN)
        s[p + "mlp.down_proj.weight"] = (HIDDEN, INTER)
        s[p + "input_layernorm.weight"] = (HIDDEN,)
        s[p + "post_attention_layernorm.weight"] = (HIDDEN,)
    s["model.norm.weight"] = (HIDDEN,)
    s["lm_head.weight"] = (VOCAB, HIDDEN)
    return s


def build_checkpoints(root: Path = CACHE) -> Path:
    """Base + 3 fine-tuned-like copies (base + small seeded noise), cached; ~1.7 GB on disk."""
    if (root / "done").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    shapes = _shapes()
    assert 105e6 < sum(torch.Size(s).numel() for s in shapes.values()) < 107e6
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
           "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": 12,
           "num_key_value_heads": 12, "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "max_position_embeddings": 2048,
           "tie_word_embeddings": False, "torch_dtype": "float32"}
    g = torch.Generator().manual_seed(0)
    base = {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}
    for name in ("base", "ft0", "ft1", "ft2"):
        sd = base if name == "base" else {k: v + 0.002 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        save_state_dict(sd, root / name, max_shard_bytes=200 * 1024**2)
        (root / name / "config.json").write_text(json.dumps(cfg))
        del sd
    (root / "ties.yaml").write_text(CONFIG.format(d=root))
    (root / "done").write_text("ok")
    return root


def _reprolab_cmd(config: Path, out: Path, commit_log: Path | None = None) -> list[str]:
    """The merge as a child; with ``commit_log`` it also records how long the atomic commit took (seconds)."""
    code = ("import sys, time; from pathlib import Path; from reprolab.mergers.weights import output\n"
            "real = output.OutputFolder.commit\n"
            "def timed(self, *a, **k):\n"
            "    t = time.perf_counter(); r = real(self, *a, **k)\n"
            "    if len(sys.argv) > 3: Path(sys.argv[3]).write_text(str(time.perf_counter() - t))\n"
            "    return r\n"
            "output.OutputFolder.commit = timed\n"
            "from reprolab.mergers.weights.run import run_merge\n"
            "run_merge(Path(sys.argv[1]), Path(sys.argv[2]), show_progress=False)")
    return [sys.executable, "-c", code, str(config), str(out), *([str(commit_log)] if commit_log else [])]


def _warm_page_cache(root: Path) -> None:
    """Read every input once so both tools start from the same (warm) page cache, not from disk."""
    for f in sorted(root.rglob("*.safetensors")):
        with open(f, "rb") as fh:
            while fh.read(64 * 1024 * 1024):
                pass


def _max_rel_diff(a_dir: Path, b_dir: Path) -> tuple[float, int]:
    from reprolab.mergers.weights.io import Checkpoint

    a, b = Checkpoint(a_dir), Checkpoint(b_dir)
    assert set(a.keys()) == set(b.keys())
    worst, n_diff = 0.0, 0
    for k in a.tensors:
        x, y = a.get(k), b.get(k)
        worst = max(worst, float((x - y).abs().max() / y.abs().max().clamp_min(1e-30)))
        n_diff += int(torch.count_nonzero(x != y))
    return worst, n_diff


def _mergekit_available() -> str | None:
    if not Path(MERGEKIT_PY).exists():
        return f"no mergekit python at {MERGEKIT_PY} (set REPROLAB_MERGEKIT_PYTHON)"
    r = subprocess.run([MERGEKIT_PY, "-c", "import mergekit"], capture_output=True)
    return None if r.returncode == 0 else f"mergekit not importable with {MERGEKIT_PY}"


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _check_targets(targets: list[tuple[bool, bool, str]]) -> None:
    """(met_reliably, ok, message) per target, all decided together: a target recorded as met reliably is a hard
    assertion; one not recorded so is a strict xfail carrying the figures (a run that meets it fails and asks for
    the record to be updated, like a claim's recorded verdict)."""
    hard = [m for reliable, ok, m in targets if reliable and not ok]
    assert not hard, "; ".join(hard)
    now_met = [m for reliable, ok, m in targets if not reliable and ok]
    if now_met:
        pytest.fail(f"target now met ({'; '.join(now_met)}); set its *_MET_RELIABLY flag and update docs/merging.md")
    missed = [m for reliable, ok, m in targets if not reliable and not ok]
    if missed:
        pytest.xfail("; ".join(missed))


@pytest.mark.benchmark
def test_bench_ties_vs_mergekit(benchmark, tmp_path):
    root = build_checkpoints()
    out = tmp_path / "reprolab_out"

    runs: list[tuple[float, float, float]] = []
    commits: list[float] = []
    commit_log = tmp_path / "commit_s"

    def setup():
        shutil.rmtree(out, ignore_errors=True)
        _warm_page_cache(root)

    def ours():
        runs.append(_time_child(_reprolab_cmd(root / "ties.yaml", out, commit_log)))
        commits.append(float(commit_log.read_text()))

    benchmark.pedantic(ours, setup=setup, rounds=ROUNDS, iterations=1)
    wall, rss, cpu = _median([r[0] for r in runs]), max(r[1] for r in runs), _median([r[2] for r in runs])
    atomic = _median(commits) / wall
    benchmark.extra_info.update({"commit_s_all": commits, "atomic_cost_fraction": atomic})
    print(f"\natomic commit (fsync + manifest + renames): median {_median(commits):.3f} s = {100 * atomic:.1f}% of wall")
    targets = [(ATOMIC_COST_MET_RELIABLY, atomic <= ATOMIC_COST_TARGET,
                f"atomic commit {100 * atomic:.1f}% of the wall time, target {100 * ATOMIC_COST_TARGET:.0f}%")]
    largest_gb = max(torch.Size(s).numel() for s in _shapes().values()) * 4 / 1024**3
    bound_gb = (3 + 2) * largest_gb + RSS_CONSTANT_GB
    benchmark.extra_info.update({
        "threads": THREADS, "reprolab_wall_s_median": wall, "reprolab_wall_s_all": [r[0] for r in runs],
        "reprolab_cpu_s_median": cpu, "reprolab_peak_rss_gb": rss, "rss_bound_gb": bound_gb,
    })
    print(f"\nthreads={THREADS} reprolab: median {wall:.2f} s wall ({', '.join(f'{r[0]:.2f}' for r in runs)}), "
          f"{cpu:.2f} s CPU, peak RSS {rss:.2f} GB (bound (K+2) x largest + {RSS_CONSTANT_GB} = {bound_gb:.2f} GB)")
    reason = _mergekit_available()
    if reason:
        _check_targets(targets)
        pytest.skip(f"mergekit side skipped: {reason}")
    mk_out = tmp_path / "mergekit_out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    mk_cmd = [MERGEKIT_PY, "-m", "mergekit.scripts.run_yaml", str(root / "ties.yaml"), str(mk_out), "--no-lazy-unpickle"]
    _warm_page_cache(root)
    mk_wall, mk_rss, mk_cpu = _time_child(mk_cmd, env)
    benchmark.extra_info.update({"mergekit_wall_s": mk_wall, "mergekit_cpu_s": mk_cpu, "mergekit_peak_rss_gb": mk_rss,
                                 "speedup": mk_wall / wall})
    print(f"mergekit: {mk_wall:.1f} s wall, {mk_cpu:.1f} s CPU, peak RSS {mk_rss:.2f} GB; speed-up {mk_wall / wall:.1f}x")

    worst, n_diff = _max_rel_diff(out, mk_out)
    exact_cfg = tmp_path / "ties_exact.yaml"
    exact_cfg.write_text((root / "ties.yaml").read_text().replace("normalize: true", "normalize: true, tie_break: mergekit"))
    _warm_page_cache(root)
    ex_wall, ex_rss, _ = _time_child(_reprolab_cmd(exact_cfg, tmp_path / "exact_out"))
    ex_worst, ex_diff = _max_rel_diff(tmp_path / "exact_out", mk_out)
    benchmark.extra_info.update({"max_rel_diff": worst, "entries_differing": n_diff, "exact_wall_s": ex_wall,
                                 "exact_peak_rss_gb": ex_rss, "exact_max_rel_diff": ex_worst})
    print(f"default tie_break: max rel diff {worst:.2e} in {n_diff} entries (ties at the trim threshold)")
    print(f"tie_break mergekit: {ex_wall:.1f} s, peak RSS {ex_rss:.2f} GB, max rel diff {ex_worst:.2e} ({ex_diff} entries)")
    assert ex_worst <= 1e-6
    assert n_diff <= 1e-6 * 106e6, "default mode should differ from mergekit only at tied threshold entries"
    assert rss <= mk_rss, f"peak RSS {rss:.2f} GB above mergekit's {mk_rss:.2f} GB"
    benchmark.extra_info["rss_ratio"] = rss / mk_rss
    targets += [
        (RSS_RATIO_MET_RELIABLY, rss <= RSS_RATIO_TARGET * mk_rss,
         f"peak RSS {rss:.2f} GB = {rss / mk_rss:.2f}x mergekit's {mk_rss:.2f} GB, target {RSS_RATIO_TARGET}x"),
        (RSS_BOUND_MET_RELIABLY, rss <= bound_gb, f"peak RSS {rss:.2f} GB vs bound {bound_gb:.2f} GB"),
        (SPEEDUP_MET_RELIABLY, wall * SPEEDUP_TARGET <= mk_wall,
         f"threads={THREADS}: {mk_wall / wall:.1f}x faster than mergekit ({wall:.2f} s vs {mk_wall:.1f} s), "
         f"target {SPEEDUP_TARGET:.0f}x"),
    ]
    _check_targets(targets)


def _time_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run ``cmd`` under a tiny wrapper that reports its own child's wall time, peak RSS (GB) and CPU time (s)."""
    wrapper = (
        "import resource, subprocess, sys, time, json; t=time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "u=resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(json.dumps([time.perf_counter()-t, u.ru_maxrss, u.ru_utime+u.ru_stime]))"
    )
    env = dict(env or os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if THREADS == "default":
            env.pop(var, None)
        else:
            env[var] = THREADS
    r = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True, env=env)
    wall, kb, cpu = json.loads(r.stdout.strip().splitlines()[-1])
    return wall, kb / 1024**2, cpu
