"""The smoke scale's config overrides, one table keyed by experiment name.

A rehearsal runs the claim's own experiment with the claim's own config; smoke only *caps* counts (steps,
epochs, components, runs) so the same code runs in seconds. An override touches only keys the claim's config
already has (a key it lacks keeps the experiment's default), and never raises a value. Configs that nest another
experiment's config (``across_runs``'s ``base``) get that experiment's caps; a sweep's ``variants`` are kept.
On a machine without CUDA a config's ``device: cuda`` becomes ``cpu`` (the line says the claim ran on CPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Caps per experiment at smoke scale: the value used is min(claim's value, cap).
SMOKE_CAPS: dict[str, dict[str, int]] = {
    "clustering.overcluster_then_merge": {"n_components": 20, "latent_dim": 4, "n_iter": 3, "steps_per_epoch": 2},
    "clustering.across_runs": {"runs": 3},
    "lvm.train": {"epochs": 1},
    "lvm.data_diagnostics": {"n_queries": 200},
    "merging.locale_suite": {"adamerging_steps": 5},
}
NESTED: dict[str, dict[str, str]] = {"clustering.across_runs": {"base": "clustering.overcluster_then_merge"}}
# Keys a CPU rehearsal must rewrite, whatever the scale: the claim asked for a device this machine lacks.
CPU_REWRITES: dict[str, Any] = {"device": "cpu", "torch_threads": 1}


def rehearsal_config(
    experiment: str, config: Mapping[str, Any], *, smoke: bool, on_cpu: bool, caps: Mapping[str, Mapping[str, int]] | None = None
) -> dict[str, Any]:
    """``config`` as a rehearsal runs it (a new dict; the claim's own is never modified)."""
    caps = SMOKE_CAPS if caps is None else caps
    out: dict[str, Any] = dict(config)
    if smoke:
        for key, cap in caps.get(experiment, {}).items():
            if key in out and isinstance(out[key], int) and not isinstance(out[key], bool):
                out[key] = min(out[key], cap)
    for key, inner in NESTED.get(experiment, {}).items():
        if isinstance(out.get(key), Mapping):
            out[key] = rehearsal_config(inner, out[key], smoke=smoke, on_cpu=on_cpu, caps=caps)
    if on_cpu:
        if out.get("device") not in (None, "cpu"):
            out["device"] = CPU_REWRITES["device"]
        if "torch_threads" in out and out["torch_threads"] != 1:  # 0 = all cores; a shared CPU box gets one
            out["torch_threads"] = CPU_REWRITES["torch_threads"]
    return out
