"""Rehearsals of the gpu tier: stand-in data in the documented on-disk formats, run through the real experiments.

A rehearsal exercises code paths, not science: verdicts on stand-in data mean nothing, so they are neither
compared nor written to the claims' history. See docs/gpu-tier.md.
"""
