"""Run claims: expand each into (arm, seed) tasks, serve them from the cache or run them, then evaluate.

Tasks of many claims are pooled, de-duplicated by cache key (claims that read different metrics of one run
share it) and run in isolated worker processes (:mod:`reprolab.claims.executor`), so one crashing, exiting or
hanging experiment becomes one ``error`` verdict. Cache keys are built statically (:mod:`reprolab.claims.resolve`):
a run served from the cache imports no experiment module at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reprolab.claims.cache import ResultCache, cache_key, canonical_json, code_version
from reprolab.claims.checks import Evaluation, Verdict, apply_guards, evaluate
from reprolab.claims.environment import skip_reason
from reprolab.claims.executor import Executor, IsolatedExecutor, Job, TaskOutcome
from reprolab.claims.loader import LoadedClaim
from reprolab.claims.resolve import ExperimentSpec, resolve_experiment
from reprolab.claims.tasklock import TaskLocks
from reprolab.experiments.registry import UnknownExperimentError

__all__ = ["ClaimResult", "Task", "TaskOutcome", "assemble", "claim_tasks", "run_claims", "run_tasks"]


@dataclass(frozen=True)
class Task:
    experiment: str
    version: str
    config: Mapping[str, Any]
    seed: int
    key: str
    spec: ExperimentSpec | None = None
    timeout_s: float | None = None
    resources: Mapping[str, float] | None = None


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClaimResult:
        """The inverse of :meth:`to_dict` (results cross process boundaries as plain data)."""
        fields = {key: value for key, value in data.items() if key != "matches"}
        for key in ("bounds", "ci", "probability_of_improvement_ci"):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        return cls(**fields)


def claim_tasks(
    item: LoadedClaim,
    *,
    search: Iterable[str] = (),
    project_root: Path | None = None,
    timeout_s: float | None = None,
) -> dict[tuple[str, int], Task]:
    """The (arm, seed) tasks of a claim, keyed statically. Raises UnknownExperimentError before anything runs."""
    spec = resolve_experiment(item.claim.experiment, search)
    timeout = getattr(item.claim, "timeout_s", None) or timeout_s
    code = code_version(spec.module, project_root)
    declared = getattr(item.claim, "resources", None)
    resources = declared.model_dump(exclude_none=True) if declared is not None else None
    tasks = {}
    for arm, config in item.claim.arm_configs().items():
        for seed in item.claim.seed_list:
            key = cache_key(spec.name, spec.version, spec.module, config, seed, code=code)
            tasks[(arm, seed)] = Task(spec.name, spec.version, config, seed, key, spec, timeout, resources)
    return tasks


ProgressCallback = Callable[[Task, TaskOutcome], None]


def run_tasks(
    tasks: Iterable[Task],
    cache: ResultCache,
    *,
    workers: int = 1,
    progress: ProgressCallback | None = None,
    executor: Executor | None = None,
) -> dict[str, TaskOutcome]:
    """Run every distinct task once (by cache key); cached ones are not re-run.

    ``executor`` is reused when given (the pytest plugin keeps one per session); otherwise one is started for
    this call and closed before it returns, so no worker outlives it. A run that another process sharing the
    cache is computing right now is waited for and read from the cache, not computed twice
    (:mod:`reprolab.claims.tasklock`).
    """
    outcomes: dict[str, TaskOutcome] = {}
    pending: dict[str, Task] = {}
    warned: dict[str, tuple[str, ...]] = {}
    for task in tasks:
        if task.key in outcomes:
            continue
        if task.key in pending:
            earlier = pending[task.key]
            if task.timeout_s is None or (
                earlier.timeout_s is not None and task.timeout_s > earlier.timeout_s
            ):
                pending[task.key] = task  # one run serves both claims: it gets the longer allowance
            continue
        problems = len(cache.problems)
        hit = cache.get(task.experiment, task.key)
        if hit is not None:
            outcomes[task.key] = TaskOutcome(hit, cached=True)
            if progress:
                progress(task, outcomes[task.key])
        else:
            if len(cache.problems) > problems:  # a bad entry: recomputed, and the claim says so
                warned[task.key] = tuple(cache.problems[problems:])
            pending[task.key] = task

    def finish(job: Job, outcome: TaskOutcome) -> None:
        task = pending[job.key]
        outcome.warnings = outcome.warnings + warned.get(job.key, ())
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
        locks.release(task.key)  # after the put: a process waiting on this run reads it from the cache
        if progress:
            progress(task, outcome)

    if not pending:
        return outcomes
    locks = TaskLocks(cache.root, enabled=cache.enabled)
    deferred: list[Task] = []  # another process is computing these

    def claimable(tasks: list[Task]) -> Iterator[Task]:
        # Locks are taken one task at a time, when an executor slot is free to start it, not all up front: two
        # processes that reach one multi-seed run at once then split its seeds instead of one computing them
        # all while the other waits idle (pytest -n 2 on claims that share a run).
        for task in tasks:
            if not locks.try_acquire(task.key):
                deferred.append(task)
                continue
            hit = cache.get(task.experiment, task.key)  # another process may have finished it since we looked
            if hit is None:
                yield task
                continue
            locks.release(task.key)
            outcomes[task.key] = TaskOutcome(hit, cached=True)
            if progress:
                progress(task, outcomes[task.key])

    own = None if executor is not None else IsolatedExecutor(workers)
    try:
        _execute(claimable(longest_first(list(pending.values()), cache)), finish, executor or own)
        again = []
        for task in deferred:
            locks.wait(task.key)
            hit = cache.get(task.experiment, task.key)
            if hit is None:  # the other process failed, died or could not write: compute it here
                again.append(task)
                continue
            outcomes[task.key] = TaskOutcome(hit, cached=True)
            if progress:
                progress(task, outcomes[task.key])
        _execute(again, finish, executor or own)
    finally:
        locks.release_all()
        if own is not None:
            own.close()
    return outcomes


def longest_first(tasks: list[Task], cache: ResultCache) -> list[Task]:
    """Tasks ordered by how long their config took before (any seed, any code version), longest first, so
    that workers finish together instead of one long run starting last; configs never run before go first
    (in the given order), as nothing says they are short."""
    past = {name: cache.past_seconds(name) for name in {t.experiment for t in tasks}}
    inf = float("inf")
    estimate = [past[t.experiment].get(canonical_json(dict(t.config)), inf) for t in tasks]
    order = sorted(range(len(tasks)), key=lambda i: -estimate[i])  # stable: ties keep the given order
    return [tasks[i] for i in order]


def _execute(tasks: Iterable[Task], finish: Callable[[Job, TaskOutcome], None], executor: Executor) -> None:
    """Hand ``tasks`` to ``executor`` lazily: a pulling executor takes the next task only when it can start it."""
    executor.run((Job(t.key, _spec_of(t), t.config, t.seed, t.timeout_s, t.resources) for t in tasks), finish)


def _spec_of(task: Task) -> ExperimentSpec:
    return task.spec if task.spec is not None else resolve_experiment(task.experiment)


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


# Slack for a metric computed in floating point at the edge of its range (a difference of two NMIs of 1 - 1e-17).
_RANGE_SLACK = 1e-9


def _outside_declared_range(task: Task, metrics: Iterable[str], values: Mapping[str, float]) -> str | None:
    """Why a returned value lies outside the range its experiment declares, or None. Why an error: the audit
    proves a claim can pass and fail from the declared ranges, so a value outside them voids that proof (and
    a bound beyond the range could then pass on a bug)."""
    ranges = task.spec.metric_ranges if task.spec is not None else None
    for name in dict.fromkeys(metrics):
        low, high = (ranges or {}).get(name) or (None, None)
        value = values.get(name)
        if value is None or not math.isfinite(value):
            continue  # a missing metric and a non-finite value have their own messages
        if (low is not None and value < low - _RANGE_SLACK * max(1.0, abs(low))) or (
            high is not None and value > high + _RANGE_SLACK * max(1.0, abs(high))
        ):
            shown = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
            return (f"metric {name!r} = {value:.6g} lies outside its declared range {shown} "
                    "(fix the experiment or its `metrics=` declaration)")
    return None


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
            cause = outcome.cause or "raised"
            return error_result(
                item, f"experiment {claim.experiment!r} failed on {where}seed {seed}: {cause}", outcome.error
            )
        if metric not in outcome.metrics:
            return error_result(
                item,
                f"{item.location}: expect.metric: experiment {claim.experiment!r} returned no metric {metric!r} "
                f"(it returned {sorted(outcome.metrics)})",
            )
        escaped = _outside_declared_range(task, [metric, *(g.metric for g in claim.valid_when)], outcome.metrics)
        if escaped is not None:
            where = f"arm {arm!r}, " if arm else ""
            return error_result(item, f"experiment {claim.experiment!r} on {where}seed {seed}: {escaped}")
        per_arm.setdefault(arm, []).append(outcome.metrics[metric])
        runs.setdefault(arm, []).append(outcome.metrics)
    evaluation: Evaluation = evaluate(claim.expect, per_arm, claim.seed_list, label=claim.id)
    evaluation = apply_guards(evaluation, claim.valid_when, runs, claim.seed_list)
    cache_warnings = [w for t in tasks.values() for w in outcomes[t.key].warnings]
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
        warnings=[*evaluation.warnings, *dict.fromkeys(cache_warnings)],
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
    search: Iterable[str] = (),
    project_root: Path | None = None,
    timeout_s: float | None = None,
    executor: Executor | None = None,
) -> list[ClaimResult]:
    """Check ``items``: skip the ones whose hardware or data is absent, run the rest's tasks pooled."""
    results: dict[str, ClaimResult] = {}
    planned: dict[str, dict[tuple[str, int], Task]] = {}
    search = tuple(search)
    for item in items:
        reason = skip_reason(item.claim)
        if reason is not None:
            results[item.id] = skipped_result(item, reason)
            continue
        try:
            planned[item.id] = claim_tasks(
                item, search=search, project_root=project_root, timeout_s=timeout_s
            )
        except UnknownExperimentError as exc:
            results[item.id] = error_result(item, f"{item.location}: experiment: {exc}")
    all_tasks = [task for tasks in planned.values() for task in tasks.values()]
    if on_plan:
        on_plan(len({t.key for t in all_tasks}))
    outcomes = run_tasks(all_tasks, cache, workers=workers, progress=progress, executor=executor)
    for item in items:
        if item.id in planned:
            results[item.id] = assemble(item, planned[item.id], outcomes)
    return [results[item.id] for item in items]
