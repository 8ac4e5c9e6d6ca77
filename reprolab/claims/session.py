"""One claims session: selection, state folder, cache, history, reports and verdict updates in one place.

``reprolab check`` and the pytest plugin are thin adapters over :class:`ClaimSession`, so one selection gives
the same claims and the same verdicts either way. A session belongs to a project (``[tool.reprolab]``, see
:mod:`reprolab.claims.project`); it puts the project's root on ``sys.path`` so that the lab's own experiment
packages import, in this process and in the isolated workers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprolab.claims.cache import ResultCache
from reprolab.claims.executor import Executor, IsolatedExecutor
from reprolab.claims.history import History, RunInfo
from reprolab.claims.loader import (
    ClaimFileError,
    LoadedClaim,
    check_unique_ids,
    iter_claim_paths,
    load_claim_file,
    load_claims,
)
from reprolab.claims.project import Project, find_project
from reprolab.claims.runner import ClaimResult, ProgressCallback, run_claims
from reprolab.claims.selection import claim_markers, compile_marker_expression
from reprolab.claims.update import UPDATABLE, update_verdict

__all__ = ["ClaimResult", "ClaimSession", "Selection"]


@dataclass
class Selection:
    claims: list[LoadedClaim]
    errors: list[ClaimFileError]


@dataclass
class Recorded:
    """What :meth:`ClaimSession.record` wrote, and what went wrong on the way (never raised)."""

    reports: tuple[Path, ...] | None  # latest.json, latest.html, then a partial run's own files
    messages: list[str] = field(default_factory=list)


class ClaimSession:
    """Everything one run of the claims suite shares. Use as a context manager: closing stops the workers."""

    def __init__(
        self,
        project: Project | None = None,
        *,
        workers: int = 1,
        use_cache: bool = True,
        timeout_s: float | None = None,
        report_dir: Path | str | None = None,
        executor: str | None = None,
        address: str | None = None,
        retries: int = 1,
    ) -> None:
        self.project = project if project is not None else find_project()
        self.workers = workers
        self.timeout_s = timeout_s if timeout_s is not None else self.project.timeout_s
        self.report_dir = Path(report_dir) if report_dir is not None else self.project.reports
        self.cache = ResultCache(self.project.state / "cache", enabled=use_cache)
        self.history = History(self.project.state / "history.sqlite")
        self.seen_ids: dict[str, LoadedClaim] = {}
        self.executor_kind = executor or self.project.executor
        self.address = address
        self.retries = retries
        self._executor: Executor | None = None
        self._added_path: str | None = None
        root = str(self.project.root)
        if root not in sys.path:  # the lab's own packages import from the project root, as under pytest
            sys.path.insert(0, root)
            self._added_path = root

    # --- selection ----------------------------------------------------------------------------------------------

    def load_file(self, path: Path) -> list[LoadedClaim]:
        """One claim file, checked against the project (notes, experiment modules) and earlier files' ids."""
        loaded = load_claim_file(path, notes=self.project.notes, search=self.project.experiments)
        duplicate = check_unique_ids(loaded, self.seen_ids)
        if duplicate is not None:
            raise duplicate
        return loaded

    def select(
        self, paths: Iterable[Path | str] = (), *, marker: str | None = None, keyword: str | None = None
    ) -> Selection:
        """Load claims below ``paths`` (default: the project's claims folders) and filter them like pytest would.

        Raises FileNotFoundError for a path that does not exist and ValueError for a bad marker expression;
        a bad claim file is one entry in ``errors`` and never stops the others.
        """
        predicate = compile_marker_expression(marker) if marker else None
        paths = list(paths)
        missing = self.project.missing_claims()
        if not paths and missing and self.project.configured:  # a typo in one folder must not drop its claims
            raise FileNotFoundError(f"{self.project.pyproject}: [tool.reprolab] claims: no folder {missing[0]}")
        paths = paths or [p for p in self.project.claims if p.is_dir()]
        if not paths:
            names = ", ".join(str(p) for p in self.project.claims)
            raise FileNotFoundError(f"no claim paths given and no claims folder ({names}) here")
        selection = Selection([], [])
        for path in iter_claim_paths(paths):
            try:
                selection.claims.extend(self.load_file(path))
            except ClaimFileError as exc:
                selection.errors.append(exc)
        if predicate is not None:
            selection.claims = [c for c in selection.claims if predicate(claim_markers(c))]
        if keyword:
            selection.claims = [c for c in selection.claims if keyword in c.id]
        return selection

    # --- running ------------------------------------------------------------------------------------------------

    @property
    def executor(self) -> Executor:
        """Local isolated processes (default), or Ray tasks (imported only when asked)."""
        if self._executor is None:
            if self.executor_kind == "ray":
                from reprolab.claims.ray_executor import PLAN_FILE, RayExecutor

                plan = self.project.state / PLAN_FILE  # `reprolab plan --write`: default resource requests
                self._executor = RayExecutor(
                    self.address, retries=self.retries, plan=plan, portable_numerics=self.project.portable_numerics
                )
            else:
                self._executor = IsolatedExecutor(
                    self.workers, portable_numerics=self.project.portable_numerics
                )
        return self._executor

    def run(
        self,
        claims: Sequence[LoadedClaim],
        *,
        progress: ProgressCallback | None = None,
        on_plan: Callable[[int], None] | None = None,
    ) -> list[ClaimResult]:
        return run_claims(
            list(claims),
            self.cache,
            workers=self.workers,
            progress=progress,
            on_plan=on_plan,
            search=self.project.experiments,
            project_root=self.project.root,
            timeout_s=self.timeout_s,
            executor=self.executor,
        )

    def update_verdicts(self, results: Iterable[ClaimResult]) -> list[str]:
        """Record each mismatching observed verdict in its claim file; one line per change."""
        changed = []
        for result in results:
            if not result.matches and result.verdict in UPDATABLE:
                update_verdict(result.file, result.id, result.verdict)
                changed.append(f"updated {result.id}: {result.recorded} -> {result.verdict} in {result.file}")
        return changed

    # --- persisting -----------------------------------------------------------------------------------------------

    def record(self, results: Sequence[ClaimResult], command: str) -> Recorded:
        """Append the run to the history and write the reports. A damaged history never stops the reports."""
        run = RunInfo.current(command=command, cwd=self.project.root)
        messages: list[str] = []
        history: History | None = self.history
        try:
            self.history.record(run, results)
        except Exception as exc:  # a disk problem, a lock held for too long: report it, still write reports
            messages.append(f"history not updated ({type(exc).__name__}: {exc})")
            history = None
        if self.history.recovered:
            messages.append(self.history.recovered)
        reports: tuple[Path, ...] | None = None
        try:
            reports = self.write_reports(run, [r.to_dict() for r in results], history=history)
        except OSError as exc:  # a read-only checkout, `reports` a file: the run and its history still count
            messages.append(self.reports_problem(exc))
        return Recorded(reports, messages)

    def reports_problem(self, exc: OSError) -> str:
        """One line for reports that could not be written: the folder, the OS's reason and the path it names."""
        where = f": {exc.filename}" if exc.filename else ""
        return f"reports not written to {self.report_dir} ({exc.strerror or exc}{where})"

    def suite(self) -> list[LoadedClaim] | None:
        """Every claim of the project's claim folders, whatever was selected (None without any folder).

        Malformed files are left out here: the selection that loads them reports them.
        """
        folders = [p for p in self.project.claims if p.is_dir()]
        if not folders:
            return None
        items, _ = load_claims(folders, search=self.project.experiments)
        return items

    def write_reports(
        self,
        run: RunInfo,
        results: Sequence[Mapping[str, Any]],
        *,
        history: History | None,
        since: str | None = None,
        write_partial: bool = True,
    ) -> tuple[Path, ...]:
        """The one place reports are written from (check, pytest, `reprolab report`).

        ``latest.*`` holds the newest result of every suite claim (merged from ``history``); a run that checked
        only part of the suite also writes its own ``run-*`` report beside it.
        """
        from reprolab.claims.report import write_reports

        return write_reports(
            self.report_dir,
            run,
            results,
            history=history,
            suite=self.suite(),
            since=since,
            write_partial=write_partial,
            bench_config=self.project.root / "benchmarks" / "kernels.yaml",
        )

    # --- lifetime -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None
        if self._added_path is not None and self._added_path in sys.path:
            sys.path.remove(self._added_path)
            self._added_path = None

    def __enter__(self) -> ClaimSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
