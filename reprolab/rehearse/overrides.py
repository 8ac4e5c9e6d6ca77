"""The rehearsal's config overrides, one table per kind keyed by experiment name.

A rehearsal runs the claim's own experiment with the claim's own config; it only *caps* counts so the same
code runs in seconds. Two kinds of cap, applied separately:

- ``STEP_CAPS`` (``--steps smoke``): how long a run goes on (iterations, epochs, repeated runs, queries);
  the arrays keep the claim's sizes, so memory and I/O are exercised at real size.
- ``SIZE_CAPS`` (``--scale smoke``): model sizes that set the arrays' shapes (components, latent dimension).

An override touches only keys the claim's config already has (a key it lacks keeps the experiment's default,
except the few in ``SET_WHEN_ABSENT`` whose default is far above the cap), and never raises a value. Configs that nest another experiment's config (``across_runs``'s ``base``) get that
experiment's caps; a sweep's ``variants`` are kept. On a machine without CUDA a config's ``device: cuda``
becomes ``cpu`` (the line says the claim ran on CPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Caps = Mapping[str, Mapping[str, int]]

# Caps per experiment: the value used is min(claim's value, cap).
STEP_CAPS: dict[str, dict[str, int]] = {
    # batch_steps: the MFA gradient trainer's Adam steps per epoch (1,000 in note 000's config)
    "clustering.overcluster_then_merge": {"n_iter": 3, "steps_per_epoch": 2, "batch_steps": 5},
    "clustering.across_runs": {"runs": 3},
    "lvm.train": {"epochs": 1},
    "lvm.data_diagnostics": {"n_queries": 200},
    "merging.locale_suite": {"adamerging_steps": 5, "adamerging_epochs": 1},
}
# Step keys a claim usually leaves at the experiment's default although that default is far above the cap
# (locale_suite: 200 AdaMerging steps x 5 epochs; the MASSIVE claims give only `setting`): set to the cap when
# absent. Every other absent key keeps its default (a cap never raises a value).
SET_WHEN_ABSENT: dict[str, tuple[str, ...]] = {
    "merging.locale_suite": ("adamerging_steps", "adamerging_epochs")
}
SIZE_CAPS: dict[str, dict[str, int]] = {
    "clustering.overcluster_then_merge": {"n_components": 20, "latent_dim": 4},
}
NESTED: dict[str, dict[str, str]] = {"clustering.across_runs": {"base": "clustering.overcluster_then_merge"}}
# Keys a CPU rehearsal must rewrite, whatever the scale: the claim asked for a device this machine lacks.
CPU_REWRITES: dict[str, Any] = {"device": "cpu", "torch_threads": 1}


def caps_for(*, steps: bool, sizes: bool) -> dict[str, dict[str, int]]:
    """The caps a rehearsal applies: step caps, size caps, both or neither."""
    out: dict[str, dict[str, int]] = {}
    for table, wanted in ((STEP_CAPS, steps), (SIZE_CAPS, sizes)):
        if wanted:
            for experiment, caps in table.items():
                out.setdefault(experiment, {}).update(caps)
    return out


def rehearsal_config(
    experiment: str, config: Mapping[str, Any], *, caps: Caps, on_cpu: bool
) -> dict[str, Any]:
    """``config`` as a rehearsal runs it (a new dict; the claim's own is never modified)."""
    out: dict[str, Any] = dict(config)
    for key, cap in caps.get(experiment, {}).items():
        if key in out and isinstance(out[key], int) and not isinstance(out[key], bool):
            out[key] = min(out[key], cap)
        elif key not in out and key in SET_WHEN_ABSENT.get(experiment, ()):
            out[key] = cap
    for key, inner in NESTED.get(experiment, {}).items():
        if isinstance(out.get(key), Mapping):
            out[key] = rehearsal_config(inner, out[key], caps=caps, on_cpu=on_cpu)
    if on_cpu:
        if out.get("device") not in (None, "cpu"):
            out["device"] = CPU_REWRITES["device"]
        if "torch_threads" in out and out["torch_threads"] != 1:  # 0 = all cores; a shared CPU box gets one
            out["torch_threads"] = CPU_REWRITES["torch_threads"]
    return out
