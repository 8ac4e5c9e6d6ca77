"""`reprolab plan`: full-scale cost of each gpu claim, extrapolated from a smoke rehearsal's measurements.

How: each experiment's *work* is a product of the sizes its loop runs over (below); the smoke rehearsal
measured wall seconds and the worker's peak RSS at the smoke work. Full-scale time = measured seconds x
(full work / smoke work). Peak memory = measured smoke RSS + the growth of the experiment's dominant array
(its bytes at full shapes minus at smoke shapes). Limits, printed with the table: the smoke seconds include
fixed costs (worker start, imports, JIT compilation), so the linear time estimate is an upper bound that is
loosest for claims whose smoke run was short; they were measured on this machine's CPU, so a GPU's time is
this divided by its speed-up, which only a run on one (scripts/rehearse_on_gpu.sh) measures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprolab.claims.loader import LoadedClaim
from reprolab.rehearse.gtr_standin import SEQUENCES
from reprolab.rehearse.massive_standin import LOCALES, N_LABELS, SIZES
from reprolab.rehearse.mnist_standin import SHAPES

FULL_MASSIVE_LOCALES = 49  # the note's 49 MASSIVE targets
GTR_DIM = 768
MASSIVE_RESIDENT = (
    8  # the MASSIVE lab's BoundedStore capacity (`resident` in reprolab/experiments/merging.py)
)


def xlmr_parameters(hidden: int, layers: int, ffn: int, vocab: int) -> int:
    """Parameters of XLMRobertaForSequenceClassification (embeddings, encoder, 2-layer head)."""
    h = hidden
    embeddings = (vocab + 514 + 1) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * ffn + ffn) + (ffn * h + h) + 2 * h
    head = (h * h + h) + (h * N_LABELS + N_LABELS)
    return embeddings + layers * layer + head


def _sizes(scale: str) -> dict[str, float]:
    (hidden, layers, _heads, ffn, vocab), _counts = SIZES[scale]
    return {
        "mnist_train": SHAPES[scale][0],
        "gtr_clean": SEQUENCES[scale]["clean"],
        "gtr_diluted": SEQUENCES[scale]["diluted"],
        "locales": len(LOCALES) if scale == "smoke" else FULL_MASSIVE_LOCALES,
        "params": xlmr_parameters(hidden, layers, ffn, vocab or 1000),
    }


def work_and_bytes(
    experiment: str, config: Mapping[str, Any], sizes: Mapping[str, float]
) -> tuple[float, float]:
    """(work units, bytes of the dominant array) of one run of ``experiment`` with ``config``."""
    if experiment == "clustering.overcluster_then_merge":
        k, lat = config.get("n_components", 50), config.get("latent_dim", 5)
        steps = config.get("n_iter", 50) * (
            config.get("steps_per_epoch", 10) if config.get("trainer") == "gradient" else 1
        )
        n = sizes["mnist_train"]
        return n * k * (lat + 1) * steps, 4.0 * n * k * (
            lat + 1
        )  # responsibilities x latent posteriors (f32)
    if experiment == "clustering.across_runs":
        base, runs = dict(config.get("base", {})), config.get("runs", 1)
        parts = [
            work_and_bytes("clustering.overcluster_then_merge", {**base, **v}, sizes)
            for v in config.get("variants", [{}])
        ]
        return runs * sum(w for w, _ in parts), max(b for _, b in parts)
    if experiment == "lvm.train":
        n = sizes["gtr_clean"] if config.get("train_set") == "clean" else sizes["gtr_diluted"]
        both = (sizes["gtr_clean"] + sizes["gtr_diluted"]) * GTR_DIM * 4.0  # both corpora are read whole
        return config.get("epochs", 20) * n, both
    if experiment == "lvm.data_diagnostics":
        n = sizes["gtr_clean"] + sizes["gtr_diluted"]
        return n + config.get("n_queries", 1000) * sizes["gtr_diluted"], n * GTR_DIM * 4.0
    if experiment == "merging.locale_suite":
        loc, params = sizes["locales"], sizes["params"]
        # every target merges and evaluates O(locales) models; resident: the pretrained module and its base
        # copy, plus at most MASSIVE_RESIDENT fine-tunes and as many task vectors, streamed from disk
        return loc * loc * params, (2.0 + 2.0 * MASSIVE_RESIDENT) * params * 4.0
    raise ValueError(f"no work model for experiment {experiment!r}")


def _human_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if b < 1024 or unit == "TB":
            return f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} TB"


@dataclass(frozen=True)
class Estimate:
    """One gpu claim at full scale, extrapolated from its smoke measurement."""

    claim: str
    experiment: str
    configs: list[dict]  # the claim's own arm configs (what its real tasks carry), not the rehearsed ones
    measured: str  # "12.3s, 516 MB on cpu (jax: no CUDA backend)"
    work_ratio: float
    hours: float  # device-hours of the whole claim, as measured (CPU unless the rehearsal ran on CUDA)
    memory_bytes: float  # peak memory of one run
    cuda: bool  # the smoke measurement ran on CUDA


def estimates(items: Sequence[LoadedClaim], measurements: Path) -> tuple[list[Estimate], list[str]]:
    """Per claim, its full-scale estimate; and the ids with no successful smoke measurement."""
    if not measurements.is_file():
        raise FileNotFoundError(f"{measurements} does not exist: run `reprolab rehearse --scale smoke` first")
    data = json.loads(measurements.read_text())
    if data.get("scale") != "smoke":
        raise ValueError(
            f"{measurements}: plan extrapolates from a smoke rehearsal, this one is {data.get('scale')}"
        )
    measured = {line["claim"]: line for line in data["lines"]}
    smoke, full = _sizes("smoke"), _sizes("full")
    out, missing = [], []
    for item in items:
        line = measured.get(item.id)
        if line is None or not line["ok"] or line.get("config") is None:
            missing.append(item.id)
            continue
        claim = item.claim
        arms = list(claim.arm_configs().values())
        w_smoke, b_smoke = work_and_bytes(claim.experiment, line["config"], smoke)
        w_full = sum(work_and_bytes(claim.experiment, cfg, full)[0] for cfg in arms) * len(claim.seed_list)
        b_full = max(work_and_bytes(claim.experiment, cfg, full)[1] for cfg in arms)
        w_smoke *= len(arms) * (line.get("n_seeds") or len(claim.seed_list))
        ratio = w_full / w_smoke
        rss = (line["peak_rss_mb"] or 0.0) * 2**20
        out.append(Estimate(
            item.id, claim.experiment, [dict(cfg) for cfg in arms],
            f"{line['seconds']:.1f}s, {line['peak_rss_mb'] or 0:.0f} MB on {line['device']}", ratio,
            line["seconds"] * ratio / 3600 / max(line.get("shared_with", 1), 1),
            rss + max(b_full - b_smoke, 0.0), str(line["device"]).startswith("cuda"),
        ))  # fmt: skip
    return out, missing


def plan_table(found: Sequence[Estimate], missing: Sequence[str]) -> tuple[list[list[str]], list[str]]:
    """The `reprolab plan` table's rows, and the notes printed under it."""
    rows = [
        [
            e.claim,
            e.experiment,
            e.measured,
            f"{e.work_ratio:.3g}",
            f"{e.hours:.3g} h",
            _human_bytes(e.memory_bytes),
        ]
        for e in found
    ]
    notes = [
        "time = smoke seconds x work ratio (work: sizes the experiment loops over, reprolab/rehearse/plan.py); "
        "an upper bound (smoke seconds include start-up and JIT), measured on this CPU: divide by the GPU's "
        "speed-up measured by scripts/rehearse_on_gpu.sh. Memory = smoke peak RSS + growth of the dominant array.",
        "a run shared by several claims is split evenly between them; sum the rows for a nightly's total.",
    ]
    if missing:
        notes.append(f"no successful smoke measurement (not estimated): {', '.join(missing)}")
    return rows, notes


def save_plan(path: Path, found: Sequence[Estimate], measurements: Path) -> None:
    """Write the estimates as JSON (atomically): the Ray executor's default resource requests for a claim
    whose YAML has no ``resources:`` (see :func:`reprolab.claims.ray_executor.planned_requests`)."""
    claims = {
        e.claim: {
            "experiment": e.experiment,
            "configs": e.configs,
            "memory_gb": round(e.memory_bytes / 2**30, 2),
            "gpus": 1 if e.cuda else 0,  # a CPU-measured plan says nothing about a GPU's need: no request
            "hours": e.hours,
            "measured": e.measured,
        }
        for e in found
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"version": 1, "measurements": str(measurements), "claims": claims}, indent=1,
                              default=str))  # fmt: skip
    os.replace(tmp, path)
