"""Named experiments: ``fn(config, seed) -> dict[str, float]``, one module per research line.

An experiment called ``clustering.overcluster_then_merge`` lives in ``reprolab.experiments.clustering``;
the module is imported only when a claim names it, so the claims engine never pulls torch or JAX in by itself.
"""

from reprolab.experiments.registry import Experiment, UnknownExperimentError, experiment, get_experiment

__all__ = ["Experiment", "UnknownExperimentError", "experiment", "get_experiment"]
