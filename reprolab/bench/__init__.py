"""Benchmark tracking: store pytest-benchmark runs, compare each kernel with its own past."""
