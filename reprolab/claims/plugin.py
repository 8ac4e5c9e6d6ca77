"""pytest plugin (entry point ``pytest11``): a thin adapter that makes each claim of a project a test item.

- Claims are collected only in a project whose ``pyproject.toml`` has ``[tool.reprolab]``, and only from its
  ``claims`` folders: another project's YAML is never touched.
- A claim carries its scale (``fast`` / ``gpu``) and kind (``reproduce`` / ``recorded`` / ``consistency``) as
  markers, so ``pytest -m "fast and not recorded"`` selects what ``reprolab check -m`` does.
- Loading, running, history, reports and updates are :class:`~reprolab.claims.session.ClaimSession`'s, as
  for the CLI. A malformed file is a one-line collection error; other files still run.
- An item passes when the observed verdict equals the recorded one; ``--update-verdicts`` rewrites the record
  and still fails that run.
- The controller (also under pytest-xdist) gathers every result, writes the reports and the history.
- ``REPROLAB_NIGHTLY=1`` turns "no gpu claim actually ran" into a failed session.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprolab.claims.checks import Verdict
from reprolab.claims.ledger import mismatch_message, summary_line
from reprolab.claims.loader import ClaimFileError, LoadedClaim
from reprolab.claims.project import Project, ProjectConfigError, configured_project, is_timeout
from reprolab.claims.runner import ClaimResult
from reprolab.claims.session import ClaimSession
from reprolab.claims.update import UPDATABLE, update_verdict

MARKERS = {
    "fast": "CI tier: unit and property tests and every `scale: fast` claim (CPU, minutes)",
    "gpu": "nightly tier: full-scale claims; skipped with a reason when CUDA or the data is absent",
    "slow": "slower than a few seconds (still part of its tier)",
    "benchmark": "pytest-benchmark timing of a critical kernel (`pytest -m benchmark`)",
    "reproduce": "claim kind: re-runs the note's experiment",
    "recorded": "claim kind: re-does the note's own arithmetic on its recorded numbers",
    "consistency": "claim kind: checks that two notes agree",
}
NIGHTLY_ENV = "REPROLAB_NIGHTLY"
_PROPERTY = "reprolab_result"
_WARNING = "reprolab_warning"  # a cache problem met while running a claim (an xdist worker's too)

_state_key = pytest.StashKey["_PluginState"]()


class _PluginState:
    """One ClaimSession per reprolab project met during collection (usually exactly one)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.sessions: dict[Path, ClaimSession] = {}
        self.results: dict[Path, list[ClaimResult]] = {}
        self.gpu_reports = 0
        self.gpu_skipped = 0
        self.written: list[tuple[Path, ...]] = []
        self.messages: list[str] = []

    def session(self, project: Project) -> ClaimSession:
        if project.root not in self.sessions:
            report_dir = self.config.getoption("reprolab_reports")
            self.sessions[project.root] = ClaimSession(
                project,
                workers=self.config.getoption("reprolab_workers"),
                use_cache=not self.config.getoption("reprolab_no_cache"),
                timeout_s=self.config.getoption("reprolab_timeout"),
                report_dir=report_dir,
            )
        return self.sessions[project.root]

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not is_timeout(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reprolab", "reprolab claims")
    group.addoption(
        "--update-verdicts",
        action="store_true",
        help="rewrite each mismatching claim's recorded verdict (the run still fails)",
    )
    group.addoption(
        "--reprolab-workers",
        type=_at_least_one,
        default=1,
        help="worker processes per pytest process for experiment runs (default 1; xdist parallelises claims)",
    )
    group.addoption(
        "--reprolab-no-cache", action="store_true", help="ignore and do not write the experiment result cache"
    )
    group.addoption(
        "--reprolab-reports",
        default=None,
        help="directory for latest.json / latest.html (default: [tool.reprolab] reports)",
    )
    group.addoption(
        "--reprolab-timeout",
        type=_positive_seconds,
        default=None,
        help="seconds per experiment run (default: [tool.reprolab] timeout_s; a claim's timeout_s wins)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    state = _PluginState(config)
    config.stash[_state_key] = state
    if not _is_worker(config):
        config.pluginmanager.register(_Reporter(state), "reprolab-reporter")


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_state_key, None)
    if state is not None:
        state.close()  # no experiment worker outlives the pytest process


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix not in {".yaml", ".yml"}:
        return None
    try:
        project = configured_project(file_path.parent)
    except ProjectConfigError as exc:
        return _BrokenProject.from_parent(parent, path=file_path, message=str(exc))
    if project is None or not project.owns(file_path):
        return None
    return ClaimYamlFile.from_parent(parent, path=file_path, project=project)


class _BrokenProject(pytest.File):
    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def collect(self) -> Iterator[pytest.Item]:
        raise self.CollectError(self.message)


class ClaimMismatch(Exception):
    """The observed verdict differs from the recorded one."""

    def __init__(self, result: ClaimResult, note: str = "") -> None:
        super().__init__(result.id)
        self.result, self.note = result, note


class ClaimYamlFile(pytest.File):
    def __init__(self, *, project: Project, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project = project

    def collect(self) -> Iterator[ClaimItem]:
        session = self.config.stash[_state_key].session(self.project)
        try:
            loaded = session.load_file(self.path)
        except ClaimFileError as exc:
            raise self.CollectError(str(exc)) from None
        for item in loaded:
            yield ClaimItem.from_parent(self, name=item.id, loaded=item, project=self.project)


class ClaimItem(pytest.Item):
    def __init__(self, *, loaded: LoadedClaim, project: Project, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loaded = loaded
        self.project = project
        self.add_marker(loaded.claim.scale)
        self.add_marker(loaded.claim.kind)

    def runtest(self) -> None:
        state = self.config.stash[_state_key]
        session = state.session(self.project)
        seen = len(session.cache.problems)
        [result] = session.run([self.loaded])
        self.user_properties.append((_PROPERTY, (str(self.project.root), result.to_dict())))
        # a damaged entry or an unwritable cache: said in the summary, as `reprolab check` says it
        self.user_properties.extend((_WARNING, message) for message in session.cache.problems[seen:])
        if result.verdict == Verdict.SKIPPED:
            # report the skip at the claim's YAML line, not at this line of the plugin
            raise pytest.skip.Exception(result.message, _use_item_location=True)
        if result.matches:
            return
        note = ""
        if self.config.getoption("update_verdicts") and result.verdict in UPDATABLE:
            update_verdict(self.loaded.path, result.id, result.verdict)
            note = f"recorded verdict of {result.id!r} updated to {result.verdict!r} in {self.loaded.path}; this run still fails"
        raise ClaimMismatch(result, note)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, ClaimMismatch):
            command = f"pytest {self.loaded.path} --update-verdicts"
            message = mismatch_message(excinfo.value.result, update_command=command)
            return message + (f"\n  {excinfo.value.note}" if excinfo.value.note else "")
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.loaded.line - 1, f"claim {self.loaded.id}"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class _Reporter:
    """Registered on the controller only: gathers results (from xdist workers too) and writes the outputs."""

    def __init__(self, state: _PluginState) -> None:
        self.state = state

    def _nightly_failed(self) -> bool:
        state = self.state
        return os.environ.get(NIGHTLY_ENV) == "1" and (
            state.gpu_reports == 0 or state.gpu_skipped == state.gpu_reports
        )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state = self.state
        if "gpu" in report.keywords and (
            report.when == "call" or (report.when == "setup" and report.skipped)
        ):
            state.gpu_reports += 1
            state.gpu_skipped += int(report.skipped)
        # user_properties ride on the setup, call and teardown reports alike: take them once, from "call"
        for name, value in report.user_properties if report.when == "call" else ():
            if name == _PROPERTY:
                root, data = value
                state.results.setdefault(Path(root), []).append(ClaimResult.from_dict(data))
            elif name == _WARNING and value not in state.messages:
                state.messages.append(value)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        state = self.state
        command = "pytest " + " ".join(session.config.invocation_params.args)
        for root, results in state.results.items():
            project = configured_project(root)
            if project is None:
                continue
            recorded = state.session(project).record(results, command)
            state.messages.extend(recorded.messages)
            if recorded.reports:
                state.written.append(recorded.reports)
        if self._nightly_failed():
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        state = self.state
        results = [r for group in state.results.values() for r in group]
        try:
            project = configured_project(config.rootpath)
        except ProjectConfigError:
            project = None  # reported where the project's files are collected
        for folder in project.missing_claims() if project is not None else ():
            # `reprolab check` refuses this (exit 2); here the suite's other tests still ran: say it loudly
            terminalreporter.write_line(
                f"warning: {project.pyproject}: [tool.reprolab] claims: no folder {folder}; its claims were not collected",
                yellow=True,
            )
        if results:
            terminalreporter.section("reprolab claims")
            terminalreporter.write_line(summary_line(results))
            for message in state.messages:
                terminalreporter.write_line(f"warning: {message}", yellow=True)
            for paths in state.written:
                terminalreporter.write_line("reports: " + " ".join(str(path) for path in paths))
        if self._nightly_failed():
            terminalreporter.write_line(
                f"{NIGHTLY_ENV}=1: {state.gpu_reports} gpu item(s) reported, {state.gpu_skipped} skipped; "
                "a nightly run in which no gpu claim ran is an error",
                red=True,
            )
