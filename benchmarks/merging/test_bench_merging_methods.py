"""Each merge method against mergekit 0.1.5 on three 106 M-parameter float32 Llama-shaped checkpoints, side by
side: reprolab's streaming merge and mergekit on the same files, the same config, the same output dtype, both
writing their output to disk. One row of ``CASES`` per method (its mergekit config and its targets).

mergekit is a benchmark-only dependency in its own venv: set REPROLAB_MERGEKIT_PYTHON to that venv's python
(default /work/venv-mergekit/bin/python). Without it the mergekit half skips with the reason. Both merges run
as subprocesses so wall time, CPU time and peak RSS (ru_maxrss of the child) are measured the same way.

Targets. TIES (issues 4 and 8): >= 15x faster than mergekit at the same thread setting, peak RSS <= 0.3x
mergekit's and under (K + 2) row blocks per merge thread + the interpreter, outputs equal (``tie_break: mergekit`` bit-identical;
the default differs only at entries tied at the trim threshold: mergekit keeps whichever ``torch.argsort``
happens to put first), and atomic output costing <= 5% of the wall time, measured two ways in the same run:
the commit of ``output.OutputFolder`` (fsync of every file, manifest, renames) timed inside the child, and
rounds alternating with a child whose fsync and early writeback are switched off (``no_sync``). Every other
method (issue 14, item 6): >= 5x faster than mergekit with no more peak memory, outputs equal within 1e-6
relative (DELLA draws its masks from an unseeded generator in mergekit: only the kept fraction is compared).
Reported in benchmark.extra_info. Correctness is always asserted; a speed or memory target not recorded as met
reliably (``*_met``) is a strict xfail carrying the measured figures.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from reprolab.mergers.weights.io import save_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "merging"))
from mergekit_cases import llama_shapes  # the test helpers are not a package

HIDDEN, INTER, LAYERS, VOCAB = 768, 2048, 8, 32000
CACHE = Path(__file__).resolve().parents[2] / ".reprolab" / "bench" / "llama106m"
MERGEKIT_PY = os.environ.get("REPROLAB_MERGEKIT_PYTHON", "/work/venv-mergekit/bin/python")
# Both tools run with the same thread count. Default: torch's own default (unset OMP/MKL variables), the setting
# the issue's ~73 s for mergekit was taken with; REPROLAB_BENCH_THREADS=1 pins both to one thread.
THREADS = os.environ.get("REPROLAB_BENCH_THREADS", "default")
ROUNDS = int(os.environ.get("REPROLAB_BENCH_ROUNDS", "3"))
ATOMIC_COST_TARGET = 0.05  # commit (fsync + renames) as a fraction of reprolab's wall time (issue 8)
ATOMIC_COST_MET_RELIABLY = True
# Peak RSS bound (TIES): the interpreter with torch and numpy (~0.22 GB here) + per merge thread (K + 2) x the
# largest tensor merged whole (a 2048 x 768 MLP matrix; the embedding and LM head are merged in row blocks) + slack.
RSS_CONSTANT_GB = 0.3
RSS_BOUND_MET_RELIABLY = True


@dataclass(frozen=True)
class Case:
    """One method's benchmark: the mergekit config (per-model and top-level parameters) and its targets.

    ``compare``: ``"ties"`` (default tie break equal but at tied threshold entries, plus a bit-identical
    ``tie_break: mergekit`` run), ``"equal"`` (max relative difference <= 1e-6), ``"kept"`` (stochastic: the
    fraction of entries left at the base's value within 0.01). ``*_met``: recorded as met reliably in
    docs/benchmarks.md (a hard assertion); otherwise a strict xfail carrying the figures.
    """

    per_model: str
    parameters: str = ""
    sources: int = 3
    base: bool = True
    base_in_models: bool = False  # the base is also the first of ``models`` (slerp, nearswap, arcee_fusion)
    speedup: float = 5.0  # issue 14, item 6
    rss_ratio: float = 1.0  # "no more peak memory"
    compare: str = "equal"
    speedup_met: bool = False
    rss_met: bool = False


CASES = {
    # rss_met: 0.30 GB = 0.16x mergekit's 1.87 GB: structural since the row blocks, not load-dependent.
    # speedup: 15.5x, 14.4x, 15.6x, 15.9x in four quiet runs on one host, 12.5x on another (AMD EPYC, load 0, its
    # Python + torch start 2.9 s vs ~1.45 s; 2026-12-03; 10.8x there that evening), 18.2x and 18.0x on a third
    # (2026-12-04, `import torch` 1.3 s; 17.5x with the output's finite check). Recorded as met on 2026-12-04: 6 of
    # the 10 quiet runs since the row blocks met it, 3 of 3 on the host of that day; the misses were 14.4x once on
    # the first host and all three runs on the host whose Python + torch start (2.9 s) is twice the others'. On
    # such a host this assertion fails, and says so (a torch-free merge path is the remaining lever: docs/merging.md).
    "ties": Case(
        "{weight: 1.0, density: 0.2}",
        "{normalize: true}",
        speedup=15.0,
        rss_ratio=0.3,
        compare="ties",
        speedup_met=True,
        rss_met=True,
    ),
    # 2026-12-03: outputs bit-identical to mergekit (the 18 differing entries of 2026-12-02 were densities rounded
    # to float32); RSS 0.76x / 0.71x (met); 1.9-2.3x faster (5x not met: where tied entries straddle a cut, 30 of
    # 225 source tensors here, mergekit's own torch.sort decides, and that sort is most of both tools' time)
    "breadcrumbs": Case("{weight: 1.0, density: 0.9, gamma: 0.01}", rss_met=True),
    "breadcrumbs_ties": Case("{weight: 1.0, density: 0.9, gamma: 0.01}", "{normalize: true}", rss_met=True),
    # 2026-12-03 (1 round): RSS 0.73x / 0.72x (met); 1.6x / 1.7x faster (5x not met: the per-row argsort of
    # |delta| that ranks the drop probabilities is mergekit's algorithm and most of both tools' time)
    "della": Case("{weight: 1.0, density: 0.5, epsilon: 0.1}", "{lambda: 1.0}", compare="kept", rss_met=True),
    "della_linear": Case("{weight: 1.0, density: 0.5, epsilon: 0.1}", "{lambda: 1.0}", compare="kept", rss_met=True),
    # 2026-12-03 (quiet): RSS 0.69x / 0.56x of mergekit's (met); 2.3x / 2.7x faster (5x not met); outputs equal
    "nearswap": Case("{}", "{t: 0.001}", sources=1, base_in_models=True, rss_met=True),
    "passthrough": Case("{scale: 0.7}", sources=1, base=False, rss_met=True),
    # 2026-12-03, first measurement (1 round, load ~1): outputs bit-identical to mergekit's (arcee_fusion: kept
    # fraction 0.9433 vs 0.9434, its quantiles are sampled), RSS 0.50-0.89x of mergekit's (met), 1.2-2.0x faster
    # (5x not met: mergekit's own kernels for these are whole-tensor torch too, and our Python + torch start-up,
    # ~3 s here, is most of a light method's wall time); karcher 3.0x and multislerp 2.1x after their buffers were reused (were 1.2x and 1.5x)
    "slerp": Case("{}", "{t: 0.3}", sources=1, base_in_models=True, rss_met=True),
    "nuslerp": Case("{weight: 0.5}", sources=2, base=False, rss_met=True),
    "multislerp": Case("{weight: 1.0}", rss_met=True),
    "karcher": Case("{}", "{max_iter: 10, tol: 1.0e-5}", base=False, rss_met=True),
    "model_stock": Case("{}", rss_met=True),
    "sce": Case("{}", "{select_topk: 0.5}", rss_met=True),
    # its outlier threshold comes from sampled quantiles on tensors this large (torch.quantile's limit): kept fraction
    "arcee_fusion": Case("{}", sources=1, base_in_models=True, compare="kept", rss_met=True),
    "ram": Case("{}", "{epsilon: 0.003}", rss_met=True),
    "ramplus_tl": Case("{}", "{epsilon: 0.004, r: 0.5, alpha: 0.6}", rss_met=True),
}


def config_text(method: str, d: Path) -> str:
    c = CASES[method]
    models = "".join(
        f"  - model: {d}/ft{i}\n" + (f"    parameters: {c.per_model}\n" if c.per_model != "{}" else "")
        for i in range(c.sources)
    )
    if c.base_in_models:  # mergekit's two-model methods take the base among their models
        models = f"  - model: {d}/base\n" + models
    return (
        f"models:\n{models}merge_method: {method}\n"
        + (f"base_model: {d}/base\n" if c.base else "")
        + (f"parameters: {c.parameters}\n" if c.parameters else "")
        + "dtype: float32\n"
    )


def _shapes() -> dict[str, tuple[int, ...]]:
    return llama_shapes(HIDDEN, INTER, LAYERS, VOCAB)


def build_checkpoints(root: Path = CACHE) -> Path:
    """Base + 3 fine-tuned-like copies (base + small seeded noise), cached; ~1.7 GB on disk."""
    if (root / "done").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    shapes = _shapes()
    assert 105e6 < sum(torch.Size(s).numel() for s in shapes.values()) < 107e6
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 12,
        "num_key_value_heads": 12,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    g = torch.Generator().manual_seed(0)
    base = {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}
    for name in ("base", "ft0", "ft1", "ft2"):
        sd = (
            base
            if name == "base"
            else {k: v + 0.002 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        )
        save_state_dict(sd, root / name, max_shard_bytes=200 * 1024**2)
        (root / name / "config.json").write_text(json.dumps(cfg))
        del sd
    (root / "done").write_text("ok")
    return root


_CHILD = """import sys, time
from pathlib import Path
from reprolab.mergers.weights import io, output
from reprolab.mergers.weights.parallel import merge_threads
config, out, log, no_sync = sys.argv[1:5]
if no_sync == "1":  # the A/B run: everything but the durability (no fsync, no early writeback)
    output.os.fsync = lambda fd: None
    io._SYNC_FILE_RANGE = None
real = output.OutputFolder.commit
def timed(self, *a, **k):
    t = time.perf_counter(); r = real(self, *a, **k)
    Path(log).write_text(f"{time.perf_counter() - t} {merge_threads()}")
    return r
output.OutputFolder.commit = timed
from reprolab.cli import cli
cli.main(["merge", "--quiet", config, out])  # the command a user runs, as mergekit's side runs mergekit-yaml
"""


def _reprolab_cmd(config: Path, out: Path, commit_log: Path, no_sync: bool = False) -> list[str]:
    """The merge as a child; it records how long the atomic commit took (seconds) and its merge threads in
    ``commit_log``."""
    return [sys.executable, "-c", _CHILD, str(config), str(out), str(commit_log), "1" if no_sync else "0"]


def _warm_page_cache(root: Path) -> None:
    """Read every input once so both tools start from the same (warm) page cache, not from disk."""
    for f in sorted(root.rglob("*.safetensors")):
        with open(f, "rb") as fh:
            while fh.read(64 * 1024 * 1024):
                pass


def _compare(a_dir: Path, b_dir: Path, base_dir: Path | None = None) -> dict[str, float]:
    """Max relative difference, entries differing, and (with ``base_dir``) each output's fraction of entries equal
    to the base's."""
    from reprolab.mergers.weights.io import Checkpoint

    a, b = Checkpoint(a_dir), Checkpoint(b_dir)
    base = Checkpoint(base_dir) if base_dir is not None else None
    assert set(a.keys()) == set(b.keys())
    worst, n_diff, at_base, n = 0.0, 0, [0, 0], 0
    for k in a.tensors:
        x, y = a.get(k), b.get(k)
        assert x.dtype == y.dtype, f"{k}: {x.dtype} vs mergekit's {y.dtype}"
        worst = max(
            worst, float((x.double() - y.double()).abs().max() / y.double().abs().max().clamp_min(1e-30))
        )
        n_diff += int(torch.count_nonzero(x != y))
        n += x.numel()
        if base is not None:
            z = base.get(k)
            at_base[0] += int(torch.count_nonzero(x == z))
            at_base[1] += int(torch.count_nonzero(y == z))
    return {
        "max_rel_diff": worst,
        "entries_differing": n_diff,
        "kept_base_ours": at_base[0] / n,
        "kept_base_mergekit": at_base[1] / n,
    }


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
        pytest.fail(
            f"target now met ({'; '.join(now_met)}); set its *_met flag and update docs/benchmarks.md"
        )
    missed = [m for reliable, ok, m in targets if not reliable and not ok]
    if missed:
        pytest.xfail("; ".join(missed))


@pytest.mark.benchmark
@pytest.mark.parametrize("method", list(CASES))
def test_bench_merge_vs_mergekit(benchmark, tmp_path, method):
    case = CASES[method]
    root = build_checkpoints()
    config = tmp_path / f"{method}.yaml"
    config.write_text(config_text(method, root))
    out, commit_log = tmp_path / "reprolab_out", tmp_path / "commit_s"
    runs: list[tuple[float, float, float]] = []
    unsynced: list[float] = []
    commits: list[float] = []
    merge_threads: list[int] = []
    atomic_ab = method == "ties"  # the A/B of the atomic output runs on the issue-8 benchmark only

    def setup():
        shutil.rmtree(out, ignore_errors=True)
        _warm_page_cache(root)

    def ours():
        runs.append(_time_child(_reprolab_cmd(config, out, commit_log)))
        commit_s, threads = commit_log.read_text().split()
        commits.append(float(commit_s))
        merge_threads.append(int(threads))
        if atomic_ab:  # alternate with the no-sync child, so both see the same machine
            shutil.rmtree(out, ignore_errors=True)
            unsynced.append(_time_child(_reprolab_cmd(config, out, commit_log, no_sync=True))[0])

    benchmark.pedantic(ours, setup=setup, rounds=ROUNDS, iterations=1)
    wall, rss, cpu = _median([r[0] for r in runs]), max(r[1] for r in runs), _median([r[2] for r in runs])
    atomic = _median(commits) / wall
    benchmark.extra_info.update(
        {
            "method": method,
            "threads": THREADS,
            "reprolab_wall_s_median": wall,
            "reprolab_wall_s_all": [r[0] for r in runs],
            "reprolab_cpu_s_median": cpu,
            "reprolab_peak_rss_gb": rss,
            "commit_s_all": commits,
            "atomic_cost_fraction": atomic,
        }
    )
    print(
        f"\n[{method}] threads={THREADS} reprolab: median {wall:.2f} s wall ({', '.join(f'{r[0]:.2f}' for r in runs)}), "
        f"{cpu:.2f} s CPU, peak RSS {rss:.2f} GB; commit (fsync + manifest + renames) median "
        f"{_median(commits):.3f} s = {100 * atomic:.1f}% of wall"
    )
    targets = [
        (
            ATOMIC_COST_MET_RELIABLY,
            atomic <= ATOMIC_COST_TARGET,
            f"atomic commit {100 * atomic:.1f}% of the wall time, target {100 * ATOMIC_COST_TARGET:.0f}%",
        )
    ]
    if atomic_ab:
        ab = wall / _median(unsynced) - 1
        benchmark.extra_info.update({"no_sync_wall_s_all": unsynced, "atomic_cost_ab": ab})
        print(
            f"[{method}] without fsync / early writeback: median {_median(unsynced):.2f} s "
            f"({', '.join(f'{w:.2f}' for w in unsynced)}): atomic output costs {100 * ab:+.1f}% of the wall"
        )
        largest_whole = max(
            torch.Size(s).numel() for n, s in _shapes().items() if "embed" not in n and "lm_head" not in n
        )
        # each merge thread holds one tensor's working set: (K + 2) x that tensor
        bound_gb = max(merge_threads) * (3 + 2) * largest_whole * 4 / 1024**3 + RSS_CONSTANT_GB
        benchmark.extra_info["rss_bound_gb"] = bound_gb
        targets.append(
            (RSS_BOUND_MET_RELIABLY, rss <= bound_gb, f"peak RSS {rss:.2f} GB vs bound {bound_gb:.2f} GB")
        )
    reason = _mergekit_available()
    if reason:
        _check_targets(targets)
        pytest.skip(f"mergekit side skipped: {reason}")
    mk_out = tmp_path / "mergekit_out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    mk_cmd = [MERGEKIT_PY, "-m", "mergekit.scripts.run_yaml", str(config), str(mk_out), "--no-lazy-unpickle"]
    _warm_page_cache(root)
    mk_wall, mk_rss, mk_cpu = _time_child(mk_cmd, env)
    benchmark.extra_info.update(
        {
            "mergekit_wall_s": mk_wall,
            "mergekit_cpu_s": mk_cpu,
            "mergekit_peak_rss_gb": mk_rss,
            "speedup": mk_wall / wall,
            "speedup_cpu": mk_cpu / cpu,
            "rss_ratio": rss / mk_rss,
        }
    )
    print(
        f"[{method}] mergekit: {mk_wall:.1f} s wall, {mk_cpu:.1f} s CPU, peak RSS {mk_rss:.2f} GB; speed-up "
        f"{mk_wall / wall:.1f}x wall, {mk_cpu / cpu:.1f}x CPU; RSS {rss / mk_rss:.2f}x"
    )

    diff = _compare(out, mk_out, root / "base" if case.compare == "kept" else None)
    benchmark.extra_info.update(diff)
    print(
        f"[{method}] vs mergekit: max rel diff {diff['max_rel_diff']:.2e} in {diff['entries_differing']} entries"
    )
    if case.compare == "ties":
        exact_cfg = tmp_path / "ties_exact.yaml"
        exact_cfg.write_text(
            config.read_text().replace("normalize: true", "normalize: true, tie_break: mergekit")
        )
        _warm_page_cache(root)
        ex_wall, ex_rss, _ = _time_child(_reprolab_cmd(exact_cfg, tmp_path / "exact_out", commit_log))
        ex = _compare(tmp_path / "exact_out", mk_out)
        benchmark.extra_info.update(
            {"exact_wall_s": ex_wall, "exact_peak_rss_gb": ex_rss, "exact_max_rel_diff": ex["max_rel_diff"]}
        )
        print(
            f"[{method}] tie_break mergekit: {ex_wall:.1f} s, peak RSS {ex_rss:.2f} GB, max rel diff "
            f"{ex['max_rel_diff']:.2e} ({ex['entries_differing']} entries)"
        )
        assert ex["max_rel_diff"] == 0.0
        assert diff["entries_differing"] <= 1e-6 * 106e6, (
            "default mode should differ only at tied threshold entries"
        )
    elif case.compare == "kept":
        print(
            f"[{method}] entries left at the base's value: ours {diff['kept_base_ours']:.4f}, "
            f"mergekit {diff['kept_base_mergekit']:.4f}"
        )
        assert abs(diff["kept_base_ours"] - diff["kept_base_mergekit"]) < 0.01
    else:
        assert diff["max_rel_diff"] <= 1e-6
    targets += [
        (
            case.rss_met,
            rss <= case.rss_ratio * mk_rss,
            f"peak RSS {rss:.2f} GB = {rss / mk_rss:.2f}x mergekit's {mk_rss:.2f} GB, target {case.rss_ratio}x",
        ),
        (
            case.speedup_met,
            wall * case.speedup <= mk_wall,
            f"threads={THREADS}: {mk_wall / wall:.1f}x faster than mergekit ({wall:.2f} s vs {mk_wall:.1f} s), "
            f"target {case.speedup:.0f}x",
        ),
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
    env.pop("REPROLAB_MERGE_THREADS", None)  # reprolab's merge threads follow torch's, as mergekit's torch does
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if THREADS == "default":
            env.pop(var, None)
        else:
            env[var] = THREADS
    r = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True, env=env
    )
    wall, kb, cpu = json.loads(r.stdout.strip().splitlines()[-1])
    return wall, kb / 1024**2, cpu
