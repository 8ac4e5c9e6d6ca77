"""Run experiment tasks as Ray tasks: the same claims on a laptop (an embedded local Ray) or on a cluster.

Selected with ``reprolab check --executor ray [--address ADDR]`` or ``[tool.reprolab] executor = "ray"``; the
default stays :class:`~reprolab.claims.executor.IsolatedExecutor`. Ray is imported only here, only when asked
(``pip install "reprolab[ray]"``).

- Each (claim arm, seed) task not served from the cache is one Ray task, with the claim's ``resources``
  (``gpus``, ``cpus``, ``memory_gb``) as its resource request. A claim whose YAML has no ``resources:``
  gets its planned ones when ``reprolab plan --write`` left a plan (``<state>/plan.json``): the planned peak
  memory, and one GPU when the plan was measured on CUDA. The YAML always wins. Results come back to the driver, which alone
  writes the cache, the history and the reports: workers need no shared filesystem for state.
- Faults: an exception, ``sys.exit`` or failed import inside the task is an outcome naming its cause, as locally.
  A worker that dies (``os._exit``, a segfault, out of memory, a lost node) is retried ``retries`` times
  (default 1) by Ray, then the task is an ``error`` naming the Ray failure. A task past its timeout is
  cancelled (force) and is an ``error``.
- Ctrl-C (or any interruption) cancels every outstanding task before it propagates; an embedded Ray is shut
  down on close, so no worker outlives the run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from reprolab.claims.executor import Job, TaskOutcome, execute
from reprolab.claims.numerics import worker_env

INSTALL_HINT = 'the ray executor needs Ray: pip install "reprolab[ray]"'


def _run_job(job: Job, path: list[str]) -> TaskOutcome:
    """The Ray task: make the driver's import path visible (the lab's package), then run like a local worker."""
    sys.path[:0] = [entry for entry in path if entry not in sys.path]
    return execute(job.spec, job.config, job.seed)


PLAN_FILE = "plan.json"  # under the project's state folder; written by `reprolab plan --write`


def task_signature(experiment: str, config: Mapping[str, Any]) -> str:
    """What identifies a claim's task in a plan: its experiment and (arm) config, canonically."""
    return json.dumps([experiment, config], sort_keys=True, default=str)


def planned_requests(path: Path) -> dict[str, dict[str, float]]:
    """Task signature -> planned ``{memory_gb, gpus}`` from a plan file ({} when there is none). Claims that
    share a task (same experiment and config) share its request, the largest of theirs."""
    if not path.is_file():
        return {}
    try:
        claims = json.loads(path.read_text())["claims"]
        out: dict[str, dict[str, float]] = {}
        for entry in claims.values():
            memory, gpus = float(entry["memory_gb"]), float(entry["gpus"])
            if not (memory >= 0 and gpus >= 0):
                raise ValueError("memory_gb and gpus must be >= 0")
            for config in entry["configs"]:
                old = out.setdefault(
                    task_signature(entry["experiment"], config), {"memory_gb": 0.0, "gpus": 0.0}
                )
                old["memory_gb"], old["gpus"] = max(old["memory_gb"], memory), max(old["gpus"], gpus)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path}: not a plan written by `reprolab plan --write` ({exc}); delete or rewrite it"
        ) from None
    return out


def _request(resources: Mapping[str, float] | None) -> dict[str, Any]:
    resources = resources or {}
    options: dict[str, Any] = {
        "num_cpus": float(resources.get("cpus", 1)),
        "num_gpus": float(resources.get("gpus", 0)),
    }
    if resources.get("memory_gb"):
        options["memory"] = int(float(resources["memory_gb"]) * 1024**3)
    return options


def _failure_cause(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"ray task failed: {type(exc).__name__}" + (f": {first[:300]}" if first else "")


CANCEL_GRACE_S = 15.0  # how long cancelled tasks are cancelled again until they end (they end in ~1 s normally)
CANCEL_RETRY_S = 0.5


class RayExecutor:
    """Ray tasks instead of local worker processes; ``address=None`` starts an embedded local Ray."""

    def __init__(
        self,
        address: str | None = None,
        *,
        retries: int = 1,
        num_cpus: int | None = None,
        portable_numerics: bool = True,
        plan: Path | None = None,
    ) -> None:
        self._planned = planned_requests(plan) if plan is not None else {}  # read before Ray starts: fail fast
        try:
            import ray
        except ImportError:
            raise RuntimeError(INSTALL_HINT) from None
        self._ray = ray
        self.retries = retries
        self._started = False
        # The worker environment of claims/numerics.py (one compute thread per task, the kernel pins), decided
        # on the driver: nodes of one cluster share a CPU kind. It is the job's runtime environment when this
        # driver starts or joins Ray (every worker of the job starts with it). A Ray this process had already
        # initialised keeps its own workers' environment (docs/scaling.md: start it with these variables).
        env = worker_env(os.environ, portable=portable_numerics)
        runtime_env = {"env_vars": env} if env else None
        if not ray.is_initialized():
            ray.init(
                address=address,
                num_cpus=num_cpus if address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env=runtime_env,
            )
            self._started = True
        self._remote = ray.remote(_run_job)

    def run(self, jobs: Iterable[Job], on_done: Callable[[Job, TaskOutcome], None]) -> None:
        ray = self._ray
        path = list(sys.path)
        pending: dict[Any, tuple[Job, float]] = {}
        for job in jobs:
            options = _request(self.resources_of(job))
            ref = self._remote.options(max_retries=self.retries, **options).remote(job, path)
            pending[ref] = (job, time.monotonic())
        try:
            while pending:
                deadlines = [s + j.timeout_s for j, s in pending.values() if j.timeout_s is not None]
                wait = max(0.0, min(deadlines) - time.monotonic()) + 0.05 if deadlines else None
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait)
                for ref in ready:
                    job, started = pending.pop(ref)
                    on_done(job, self._outcome(ref, started))
                now = time.monotonic()
                overdue = [r for r, (j, s) in pending.items() if j.timeout_s is not None and now - s > j.timeout_s]
                if overdue:
                    self._cancel(overdue)  # together: one grace period however many time out at once
                for ref in overdue:
                    job, started = pending.pop(ref)
                    cause = f"timed out after {job.timeout_s:g} s (ray task cancelled)"
                    on_done(job, TaskOutcome(None, error=cause, cause=cause, seconds=now - started))
        except BaseException:
            self._cancel(list(pending))  # interrupted: nothing may keep running for a driver that no longer waits
            raise

    def _cancel(self, refs: list[Any], grace_s: float = CANCEL_GRACE_S) -> None:
        """Force-cancel ``refs``, and cancel again those that have not ended, until all have or ``grace_s`` has
        passed. Why again: a cancel that reaches a task while a worker is being leased for it can be lost (Ray
        issues 12080, 21535), and the task then runs to its end holding its CPU (seen once in CI: a hanging task
        kept one of two CPUs for over 120 s after an interrupt). ``ray.cancel`` of an ended task is a no-op."""
        ray = self._ray
        left = list(refs)
        deadline = time.monotonic() + grace_s
        while left:
            for ref in left:
                ray.cancel(ref, force=True)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            _, left = ray.wait(left, num_returns=len(left), timeout=min(CANCEL_RETRY_S, remaining))

    def resources_of(self, job: Job) -> Mapping[str, float] | None:
        """The claim's YAML ``resources`` when it has them, else the plan's for this task (or None)."""
        if job.resources is not None:
            return job.resources
        return self._planned.get(task_signature(job.spec.name, job.config))

    def _outcome(self, ref: Any, started: float) -> TaskOutcome:
        try:
            return self._ray.get(ref)
        except (
            Exception
        ) as exc:  # the worker died (after its retries), the node was lost, the task was cancelled
            cause = _failure_cause(exc)
            return TaskOutcome(None, error=str(exc), cause=cause, seconds=time.monotonic() - started)

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False
