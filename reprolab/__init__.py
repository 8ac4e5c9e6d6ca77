"""reprolab: does what we wrote down still hold?

Two things in one package: a library of the models, mergers and diagnostics that three research lines'
lab notes make claims about, and a claims engine that turns each claim into a tolerance-bounded,
seed-aware expectation (``expectations/*.yaml``) checked by pytest and by ``reprolab check``.

A lab's own experiments need only the public API::

    from reprolab import config_value, experiment
"""

from reprolab.experiments.registry import config_value, experiment

__all__ = ["__version__", "config_value", "experiment"]
__version__ = "0.1.0"
