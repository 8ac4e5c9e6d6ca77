"""Run claims: expand each into (arm, seed) tasks, serve them from the cache or run them, then evaluate.

Tasks of many claims are pooled, de-duplicated by cache key (claims that read different metrics of one run
share it) and, with ``workers > 1``, run in worker processes. Workers are started with ``spawn``: torch and
JAX both dislike being forked after they have initialised.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reprolab.claims.cache import ResultCache, cache_key
from reprolab.claims.checks import Evaluation, Verdict, apply_guards, evaluate
from reprolab.claims.environment import skip_reason
from reprolab.claims.loader import LoadedClaim
from reprolab.experiments.registry import UnknownExperimentError, get_experiment


@dataclass(frozen=True)
class Task:
    experiment: str
    version: str
    config: Mapping[str, Any]
    seed: int
    key: str


@dataclass
class TaskOutcome:
    metrics: dict[str, float] | None
    error: str | None = None
    seconds: float = 0.0
    cached: bool = False


@dataclass
class ClaimResult:
    """Everything the ledger, the reports and the history need about one checked claim."""

    id: str
    file: str
    line: int
    document: str
    kind: str
    scale: str
    statement: str
    quote: str
    expected: str
    why: str
    metric: str
    statistic: str
    interval: str
    bounds: tuple[float, float]
    recorded: str
    verdict: str
    observed: float | None = None
    ci: tuple[float, float] | None = None
    n_seeds: int = 0
    seeds: list[int] = field(default_factory=list)
    arms: list[str] = field(default_factory=lambda: [""])  # [treatment, control] for paired claims
    values: dict[str, list[float]] = field(default_factory=dict)
    samples: list[float] = field(default_factory=list)  # per seed: the value, indicator or paired difference
    probability_of_improvement: float | None = None
    probability_of_improvement_ci: tuple[float, float] | None = None
    guards: list[dict[str, Any]] = field(default_factory=list)  # valid_when outcomes (GuardOutcome.to_dict)
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    traceback: str | None = None
    seconds: float = 0.0
    cached_tasks: int = 0

    @property
    def matches(self) -> bool:
        """Skips never count as a mismatch; everything else must equal the recorded verdict."""
        return self.verdict == Verdict.SKIPPED or self.verdict == self.recorded

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["matches"] = self.matches
        return data


def _execute(experiment: str, config: Mapping[str, Any], seed: int) -> TaskOutcome:
    """Run one task, in this process or a worker. Exceptions become an error outcome with the traceback."""
    start = time.perf_counter()
    try:
        metrics = get_experiment(experiment)(config, seed)
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"experiment {experiment!r} returned {type(metrics).__name__}, expected a dict of floats"
            )
        clean = {str(name): float(value) for name, value in metrics.items()}
    except Exception:
        return TaskOutcome(None, error=traceback.format_exc(), seconds=time.perf_counter() - start)
    return TaskOutcome(clean, seconds=time.perf_counter() - start)


def claim_tasks(item: LoadedClaim) -> dict[tuple[str, int], Task]:
    """The (arm, seed) tasks of a claim. Raises UnknownExperimentError before anything runs."""
    experiment = get_experiment(item.claim.experiment)
    tasks = {}
    for arm, config in item.claim.arm_configs().items():
        for seed in item.claim.seed_list:
            key = cache_key(experiment.name, experiment.version, experiment.module, config, seed)
            tasks[(arm, seed)] = Task(experiment.name, experiment.version, config, seed, key)
    return tasks


ProgressCallback = Callable[[Task, TaskOutcome], None]


def run_tasks(
    tasks: Iterable[Task], cache: ResultCache, *, workers: int = 1, progress: ProgressCallback | None = None
) -> dict[str, TaskOutcome]:
    """Run every distinct task once (by cache key); cached ones are not re-run."""
    outcomes: dict[str, TaskOutcome] = {}
    pending: dict[str, Task] = {}
    for task in tasks:
        if task.key in outcomes or task.key in pending:
            continue
        hit = cache.get(task.experiment, task.key)
        if hit is not None:
            outcomes[task.key] = TaskOutcome(hit, cached=True)
            if progress:
                progress(task, outcomes[task.key])
        else:
            pending[task.key] = task

    def finish(task: Task, outcome: TaskOutcome) -> None:
        outcomes[task.key] = outcome
        if outcome.metrics is not None:
            cache.put(
                task.experiment,
                task.key,
                outcome.metrics,
                config=task.config,
                seed=task.seed,
                seconds=outcome.seconds,
            )
        if progress:
            progress(task, outcome)

    if workers <= 1 or len(pending) <= 1:
        for task in pending.values():
            finish(task, _execute(task.experiment, task.config, task.seed))
        return outcomes
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_execute, t.experiment, t.config, t.seed): t for t in pending.values()}
        for future in as_completed(futures):
            task = futures[future]
            try:
                outcome = future.result()
            except Exception:  # the worker process itself died (killed, out of memory)
                outcome = TaskOutcome(None, error=traceback.format_exc())
            finish(task, outcome)
    return outcomes


def _base_result(item: LoadedClaim, verdict: str, **extra: Any) -> ClaimResult:
    claim, expect = item.claim, item.claim.expect
    return ClaimResult(
        id=claim.id,
        file=str(item.path),
        line=item.line,
        document=item.source.document,
        kind=claim.kind,
        scale=claim.scale,
        statement=claim.statement,
        quote=claim.quote,
        expected=expect.describe(),
        why=expect.why,
        metric=expect.metric,
        statistic=expect.statistic,
        interval=expect.interval,
        bounds=expect.accepted_interval(),
        recorded=claim.verdict,
        verdict=str(verdict),
        seeds=claim.seed_list,
        arms=list(expect.of) if expect.of else [""],
        **extra,
    )


def skipped_result(item: LoadedClaim, reason: str) -> ClaimResult:
    return _base_result(item, Verdict.SKIPPED, message=reason)


def error_result(item: LoadedClaim, message: str, tb: str | None = None) -> ClaimResult:
    return _base_result(item, Verdict.ERROR, message=message, traceback=tb)


def assemble(
    item: LoadedClaim, tasks: Mapping[tuple[str, int], Task], outcomes: Mapping[str, TaskOutcome]
) -> ClaimResult:
    """Evaluate a claim from its tasks' outcomes."""
    claim = item.claim
    metric = claim.expect.metric
    per_arm: dict[str, list[float]] = {}
    runs: dict[str, list[dict[str, float]]] = {}  # every metric of each run, for the guards
    seconds = sum(outcomes[t.key].seconds for t in tasks.values())
    cached = sum(outcomes[t.key].cached for t in tasks.values())
    for (arm, seed), task in tasks.items():
        outcome = outcomes[task.key]
        if outcome.metrics is None:
            where = f"arm {arm!r}, " if arm else ""
            return error_result(
                item, f"experiment {claim.experiment!r} raised on {where}seed {seed}", outcome.error
            )
        if metric not in outcome.metrics:
            return error_result(
                item,
                f"{item.location}: expect.metric: experiment {claim.experiment!r} returned no metric {metric!r} "
                f"(it returned {sorted(outcome.metrics)})",
            )
        per_arm.setdefault(arm, []).append(outcome.metrics[metric])
        runs.setdefault(arm, []).append(outcome.metrics)
    evaluation: Evaluation = evaluate(claim.expect, per_arm, claim.seed_list, label=claim.id)
    evaluation = apply_guards(evaluation, claim.valid_when, runs, claim.seed_list)
    return _base_result(
        item,
        evaluation.verdict,
        observed=evaluation.observed,
        ci=evaluation.ci,
        n_seeds=evaluation.n_seeds,
        values=per_arm,
        samples=evaluation.samples,
        probability_of_improvement=evaluation.probability_of_improvement,
        probability_of_improvement_ci=evaluation.probability_of_improvement_ci,
        guards=[outcome.to_dict() for outcome in evaluation.guards],
        message=evaluation.message,
        warnings=evaluation.warnings,
        seconds=seconds,
        cached_tasks=cached,
    )


def run_claims(
    items: list[LoadedClaim],
    cache: ResultCache,
    *,
    workers: int = 1,
    progress: ProgressCallback | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> list[ClaimResult]:
    """Check ``items``: skip the ones whose hardware or data is absent, run the rest's tasks pooled."""
    results: dict[str, ClaimResult] = {}
    planned: dict[str, dict[tuple[str, int], Task]] = {}
    for item in items:
        reason = skip_reason(item.claim)
        if reason is not None:
            results[item.id] = skipped_result(item, reason)
            continue
        try:
            planned[item.id] = claim_tasks(item)
        except UnknownExperimentError as exc:
            results[item.id] = error_result(item, f"{item.location}: experiment: {exc}")
    all_tasks = [task for tasks in planned.values() for task in tasks.values()]
    if on_plan:
        on_plan(len({t.key for t in all_tasks}))
    outcomes = run_tasks(all_tasks, cache, workers=workers, progress=progress)
    for item in items:
        if item.id in planned:
            results[item.id] = assemble(item, planned[item.id], outcomes)
    return [results[item.id] for item in items]


def default_state_dir(start: Path | None = None) -> Path:
    """``.reprolab/`` next to the nearest ``pyproject.toml`` or ``expectations/`` above ``start`` (or the cwd)."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").exists() or (candidate / "expectations").is_dir():
            return candidate / ".reprolab"
    return here / ".reprolab"
