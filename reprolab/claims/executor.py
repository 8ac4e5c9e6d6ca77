"""Run experiment tasks in isolated worker processes, so that a run survives its parts.

Each worker is a ``spawn``-started process (torch and JAX dislike being forked after they initialised) that
runs tasks one at a time and stays up between them (imports and per-process memos are paid once). Whatever
a task does to its worker becomes one outcome naming the cause, for that task only:

- an exception, ``sys.exit`` or a failed import: reported by the worker, which carries on;
- ``os._exit``, a segfault, a signal, running out of memory: the worker is gone; its exit status or signal
  is the cause, and a fresh worker takes the next task;
- running past its timeout: the worker is killed and replaced.

Workers never outlive the run: the executor kills them on close, and a worker whose parent dies (even by
SIGKILL) exits on its own (``PR_SET_PDEATHSIG`` on Linux, and a watchdog thread elsewhere).

Each worker computes on one thread (OpenBLAS, MKL, OpenMP: ``numerics.THREAD_VARIABLES``, unless the caller's
environment sets them): parallelism comes from the workers (``-n``). Multi-threaded BLAS in several workers on
a few shared cores oversubscribes them, and OpenBLAS's spinning threads then burn more CPU than they compute
(a 384 x 384 ``eigvalsh`` took 1.5 CPU-s and 4 s of wall time with 2 threads on this project's 2-core
machine under load, 0.01 CPU-s with one). One thread in every worker also keeps results independent of ``-n``. The same start-up environment holds the
kernel libraries to their AVX2 code paths (:mod:`numerics`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from reprolab.claims.numerics import worker_environ
from reprolab.claims.resolve import ExperimentSpec
from reprolab.experiments.registry import require_metrics_mapping
from reprolab.startup import paused_collector

# Research lines whose heavy dependencies are a pip extra of reprolab (see pyproject.toml).
EXTRAS = ("clustering", "lvm", "merging", "data")


@dataclass(frozen=True)
class Job:
    key: str
    spec: ExperimentSpec
    config: Mapping[str, Any]
    seed: int
    timeout_s: float | None = None
    resources: Mapping[str, float] | None = None  # gpus / cpus / memory_gb, for schedulers (Ray)


@dataclass
class TaskOutcome:
    metrics: dict[str, float] | None
    error: str | None = None  # the traceback, or what is known about a dead worker
    seconds: float = 0.0
    cached: bool = False
    cause: str | None = None  # one line: why there are no metrics
    warnings: tuple[str, ...] = ()


class Executor(Protocol):
    """Runs jobs and reports each outcome as it arrives; ``close`` leaves nothing running."""

    def run(self, jobs: Iterable[Job], on_done: Callable[[Job, TaskOutcome], None]) -> None: ...

    def close(self) -> None: ...


def missing_dependency_hint(spec: ExperimentSpec, missing: str | None) -> str:
    """What to install when ``missing`` (a module name) cannot be imported by ``spec``'s experiment."""
    parts = spec.module.split(".")
    if parts[:2] == ["reprolab", "experiments"] and len(parts) > 2 and parts[2] in EXTRAS:
        return f'pip install "reprolab[{parts[2]}]"'
    return f"pip install {(missing or '?').split('.', 1)[0]}"


def execute(spec: ExperimentSpec, config: Mapping[str, Any], seed: int) -> TaskOutcome:
    """Run one task in this process. Every failure, ``sys.exit`` included, becomes an outcome with its cause."""
    from reprolab.experiments.registry import load_experiment

    start = time.perf_counter()

    def failed(cause: str) -> TaskOutcome:
        return TaskOutcome(
            None, error=traceback.format_exc(), seconds=time.perf_counter() - start, cause=cause
        )

    try:
        # Only the first import: freezing on every task would also freeze the cyclic garbage an earlier task left
        # for the collector, and a long-lived worker would never free it.
        first_import = spec.module not in sys.modules
        with paused_collector() if first_import else contextlib.nullcontext():  # torch or JAX: see reprolab.startup
            experiment = load_experiment(spec)
    except ModuleNotFoundError as exc:
        return failed(f"missing dependency {exc.name!r}: {missing_dependency_hint(spec, exc.name)}")
    except SystemExit as exc:
        return failed(f"importing {spec.module} called sys.exit({exc.code!r})")
    except BaseException as exc:  # a broken module must not take the worker down
        return failed(f"cannot import {spec.module}: {type(exc).__name__}: {exc}")
    try:
        # an experiment's prints go to stderr: stdout is the command's own output (the ledger, --json)
        with contextlib.redirect_stdout(sys.stderr):
            metrics = require_metrics_mapping(spec.name, experiment(config, seed))
        clean = {}
        for name, value in metrics.items():
            if isinstance(value, bool) or (
                not isinstance(value, int | float) and not hasattr(value, "__float__")
            ):
                raise TypeError(
                    f"experiment {spec.name!r} returned metric {name!r} = {value!r}, not a number"
                )
            clean[str(name)] = float(value)
    except ModuleNotFoundError as exc:
        return failed(f"missing dependency {exc.name!r}: {missing_dependency_hint(spec, exc.name)}")
    except SystemExit as exc:
        return failed(f"experiment called sys.exit({exc.code!r})")
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return failed(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
    return TaskOutcome(clean, seconds=time.perf_counter() - start)


# --- the worker process -----------------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(70)
            time.sleep(0.5)

    threading.Thread(target=watch, name="reprolab-parent-watchdog", daemon=True).start()


def _worker_main(conn: multiprocessing.connection.Connection, parent_pid: int, path: list[str]) -> None:
    _die_with_parent(parent_pid)
    # Ctrl-C is the parent's to handle (it kills its workers): a KeyboardInterrupt here then comes from the
    # experiment itself, and is that task's error, not the worker's death
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path[:] = path
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            outcome = execute(job.spec, job.config, job.seed)
        except KeyboardInterrupt:
            outcome = TaskOutcome(None, error=traceback.format_exc(), cause="the experiment raised KeyboardInterrupt")
        try:
            conn.send(outcome)
        except (BrokenPipeError, OSError):
            return


# --- the parent side ------------------------------------------------------------------------------------------


def _death_cause(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker process vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        extra = (
            " (a crash in native code)"
            if name in {"SIGSEGV", "SIGBUS", "SIGABRT", "SIGFPE", "SIGILL"}
            else ""
        )
        if name == "SIGKILL":
            extra = " (killed: out of memory?)"
        return f"worker process killed by {name}{extra}"
    return f"worker process exited with status {exitcode} (os._exit or a crash) before returning a result"


class _Worker:
    def __init__(self, context: Any, path: list[str], *, portable_numerics: bool = True) -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_worker_main, args=(child, os.getpid(), path), name="reprolab-worker", daemon=True
        )
        with worker_environ(portable_numerics):  # the spawned interpreter inherits threads and kernel pins
            self.process.start()
        child.close()
        self.job: Job | None = None
        self.started = 0.0

    def give(self, job: Job) -> None:
        self.job, self.started = job, time.monotonic()
        self.conn.send(job)

    def overdue(self, now: float) -> bool:
        return (
            self.job is not None
            and self.job.timeout_s is not None
            and now - self.started > self.job.timeout_s
        )

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class IsolatedExecutor:
    """A pool of up to ``workers`` isolated worker processes, started on first use and reused until closed."""

    def __init__(self, workers: int = 1, *, portable_numerics: bool = True) -> None:
        self.workers = max(1, workers)
        self.portable_numerics = portable_numerics
        self._context = multiprocessing.get_context("spawn")
        self._pool: list[_Worker] = []

    def _start(self) -> _Worker:
        worker = _Worker(self._context, list(sys.path), portable_numerics=self.portable_numerics)
        self._pool.append(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        self._pool.remove(worker)

    def run(self, jobs: Iterable[Job], on_done: Callable[[Job, TaskOutcome], None]) -> None:
        """Run ``jobs``; ``on_done`` gets every outcome as it arrives (in the order they finish).

        ``jobs`` is pulled one job at a time, only when a worker is free to start it (the runner takes a task's
        cross-process lock as it yields it, so a job must not be taken before it can run)."""
        source = iter(jobs)
        exhausted = False
        try:
            while True:
                while not exhausted:
                    idle = next((w for w in self._pool if w.job is None), None)
                    if idle is None and len(self._pool) >= self.workers:
                        break
                    job = next(source, None)
                    if job is None:
                        exhausted = True
                        break
                    (idle or self._start()).give(job)
                if not any(w.job is not None for w in self._pool):
                    break
                self._wait(on_done)
        except BaseException:
            self.close()  # interrupted: no worker may keep running a task nobody waits for
            raise

    def _wait(self, on_done: Callable[[Job, TaskOutcome], None]) -> None:
        busy = [w for w in self._pool if w.job is not None]
        deadlines = [w.started + w.job.timeout_s for w in busy if w.job and w.job.timeout_s is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) + 0.01 if deadlines else None
        waitables: dict[Any, _Worker] = {}
        for worker in busy:
            waitables[worker.conn] = worker
            waitables[worker.process.sentinel] = worker
        ready = multiprocessing.connection.wait(list(waitables), timeout=timeout)
        handled: set[int] = set()
        for handle in ready:
            worker = waitables[handle]
            if id(worker) in handled or worker.job is None:
                continue
            handled.add(id(worker))
            job = worker.job
            outcome = self._receive(worker)
            if outcome is None:  # the worker died on this job
                worker.process.join(5)  # reap it, so that its exit status is known
                exitcode = worker.process.exitcode
                self._retire(worker)
                cause = _death_cause(exitcode)
                outcome = TaskOutcome(
                    None, error=cause, cause=cause, seconds=time.monotonic() - worker.started
                )
            else:
                worker.job = None
            on_done(job, outcome)
        now = time.monotonic()
        for worker in [w for w in self._pool if w.overdue(now)]:
            job = worker.job
            assert job is not None and job.timeout_s is not None
            self._retire(worker)
            cause = f"timed out after {job.timeout_s:g} s (worker killed)"
            on_done(job, TaskOutcome(None, error=cause, cause=cause, seconds=now - worker.started))

    @staticmethod
    def _receive(worker: _Worker) -> TaskOutcome | None:
        try:
            if worker.conn.poll():
                return worker.conn.recv()
        except (EOFError, OSError):
            return None
        except Exception as exc:  # a result that cannot be unpickled
            return TaskOutcome(None, error=traceback.format_exc(), cause=f"unreadable result: {exc}")
        worker.process.join(1)
        return None

    def close(self) -> None:
        for worker in list(self._pool):
            try:
                if worker.job is None and worker.process.is_alive():
                    worker.conn.send(None)
                    worker.process.join(2)
            except (BrokenPipeError, OSError):
                pass
            self._retire(worker)

    def __enter__(self) -> IsolatedExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
