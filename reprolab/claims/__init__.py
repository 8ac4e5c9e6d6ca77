"""The claims engine: schema, loading, statistics, verdicts, runner, cache, history, reports, pytest plugin. No torch/JAX imports."""
