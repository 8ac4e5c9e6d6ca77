"""Component mergers: turn an over-clustered mixture's K components into ``n_groups`` groups.

All share one interface (:class:`ComponentMerger`): ``fit(resp, n_groups)`` on train responsibilities,
``predict(resp)`` on any split. :func:`make_merger` builds one by name for the experiments.
"""

from __future__ import annotations

from typing import Any

from reprolab.mergers.components._base import ComponentMerger, check_responsibilities, group_responsibilities
from reprolab.mergers.components.coassignment import CoAssignmentMerger
from reprolab.mergers.components.entropy import EntropyMerger
from reprolab.mergers.components.hennig import BhattacharyyaMerger, DEMPMerger, RidgelineMerger
from reprolab.mergers.components.hungarian import HungarianReference
from reprolab.mergers.components.kl import SymmetricKLMerger

MERGERS = ("coassignment", "kl", "entropy", "demp", "bhattacharyya", "ridgeline", "hungarian")


def make_merger(name: str, **context: Any) -> ComponentMerger:
    """Merger by name; ``context`` supplies what some need: ``gaussians=(means, covs)``, ``labels``."""
    if name == "coassignment":
        return CoAssignmentMerger()
    if name == "entropy":
        return EntropyMerger()
    if name == "demp":
        return DEMPMerger()
    if name in ("kl", "bhattacharyya", "ridgeline"):
        if "gaussians" not in context:
            raise ValueError(f"merger {name!r} needs gaussians=(means, covs)")
        cls = {"kl": SymmetricKLMerger, "bhattacharyya": BhattacharyyaMerger, "ridgeline": RidgelineMerger}[
            name
        ]
        return cls(*context["gaussians"])
    if name == "hungarian":
        if "labels" not in context:
            raise ValueError("merger 'hungarian' needs labels (it is a label-using reference)")
        return HungarianReference(context["labels"])
    raise ValueError(f"unknown merger {name!r}; choose one of {MERGERS}")


__all__ = [
    "MERGERS",
    "BhattacharyyaMerger",
    "CoAssignmentMerger",
    "ComponentMerger",
    "DEMPMerger",
    "EntropyMerger",
    "HungarianReference",
    "RidgelineMerger",
    "SymmetricKLMerger",
    "check_responsibilities",
    "group_responsibilities",
    "make_merger",
]
