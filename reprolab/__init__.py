"""reprolab: does what we wrote down still hold?

Two things in one package: a library of the models, mergers and diagnostics that three research lines'
lab notes make claims about, and a claims engine that turns each claim into a tolerance-bounded,
seed-aware expectation (``expectations/*.yaml``) checked by pytest and by ``reprolab check``.
"""

__version__ = "0.1.0"
