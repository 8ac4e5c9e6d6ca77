"""Weight-space model merging: one registry of methods, task vectors, source selection, streaming I/O.

Quick use::

    from reprolab.mergers.weights import merge_state_dicts
    merged = merge_state_dicts(pretrained, [ft_a, ft_b], "ties", [0.5, 0.5], params={"density": 0.2})

or from the shell: ``reprolab merge config.yaml out/`` (see :mod:`reprolab.mergers.weights.config`).
"""

from reprolab.mergers.weights.engine import (
    MergePlan,
    StateDictSource,
    merge_checkpoints,
    merge_iter,
    merge_state_dicts,
    merge_tensors,
)
from reprolab.mergers.weights.io import Checkpoint, StreamingWriter, load_state_dict, save_state_dict
from reprolab.mergers.weights.registry import MergeMethod, TensorContext, get_method, list_methods, register
from reprolab.mergers.weights.task_vectors import BaseIsSourceError, task_vector

__all__ = [
    "BaseIsSourceError",
    "Checkpoint",
    "MergeMethod",
    "MergePlan",
    "StateDictSource",
    "StreamingWriter",
    "TensorContext",
    "get_method",
    "list_methods",
    "load_state_dict",
    "merge_checkpoints",
    "merge_iter",
    "merge_state_dicts",
    "merge_tensors",
    "register",
    "save_state_dict",
    "task_vector",
]
