"""pytest plugin (entry point ``pytest11``): every claim in ``expectations/**/*.yaml`` is a test item.

- A claim's ``scale`` becomes its marker (``fast`` / ``gpu``); ``pytest -m fast`` selects the CI tier.
- A malformed file is a collection error with a one-line ``file:line: field: message``; other files still run.
- An item passes when the observed verdict equals the recorded one; ``--update-verdicts`` rewrites the record
  and still fails that run.
- The controller (also under pytest-xdist) gathers every result, writes ``reports/latest.{json,html}`` and
  appends the run to the history database.
- ``REPROLAB_NIGHTLY=1`` turns "no gpu claim actually ran" into a failed session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprolab.claims.cache import ResultCache
from reprolab.claims.environment import skip_reason
from reprolab.claims.history import History, RunInfo
from reprolab.claims.ledger import mismatch_message, summary_line
from reprolab.claims.loader import ClaimFileError, LoadedClaim, check_unique_ids, load_claim_file
from reprolab.claims.report import write_reports
from reprolab.claims.runner import ClaimResult, assemble, claim_tasks, error_result, run_tasks, skipped_result
from reprolab.claims.update import UPDATABLE, update_verdict
from reprolab.experiments.registry import UnknownExperimentError

MARKERS = {
    "fast": "CI tier: unit and property tests and every `scale: fast` claim (CPU, minutes)",
    "gpu": "nightly tier: full-scale claims; skipped with a reason when CUDA or the data is absent",
    "slow": "slower than a few seconds (still part of its tier)",
    "benchmark": "pytest-benchmark timing of a critical kernel (`pytest -m benchmark`)",
}
NIGHTLY_ENV = "REPROLAB_NIGHTLY"
_PROPERTY = "reprolab_result"

_state_key = pytest.StashKey["_SessionState"]()


class _SessionState:
    def __init__(self, config: pytest.Config) -> None:
        root = config.rootpath
        self.cache = ResultCache(
            root / ".reprolab" / "cache", enabled=not config.getoption("reprolab_no_cache")
        )
        self.history = History(root / ".reprolab" / "history.sqlite")
        report_dir = config.getoption("reprolab_reports")
        self.report_dir = Path(report_dir) if report_dir else root / "reports"
        self.seen_ids: dict[str, LoadedClaim] = {}
        self.results: list[ClaimResult] = []
        self.gpu_reports = 0
        self.gpu_skipped = 0
        self.written: tuple[Path, Path] | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reprolab", "reprolab claims")
    group.addoption(
        "--update-verdicts",
        action="store_true",
        help="rewrite each mismatching claim's recorded verdict (the run still fails)",
    )
    group.addoption(
        "--reprolab-workers",
        type=int,
        default=1,
        help="processes per claim for its seeds (default 1; xdist parallelises claims)",
    )
    group.addoption(
        "--reprolab-no-cache", action="store_true", help="ignore and do not write the experiment result cache"
    )
    group.addoption(
        "--reprolab-reports",
        default=None,
        help="directory for latest.json / latest.html (default <rootdir>/reports)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    state = _SessionState(config)
    config.stash[_state_key] = state
    if not _is_worker(config):
        config.pluginmanager.register(_Reporter(state), "reprolab-reporter")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix in {".yaml", ".yml"} and "expectations" in file_path.parts:
        return ClaimYamlFile.from_parent(parent, path=file_path)
    return None


class ClaimMismatch(Exception):
    """The observed verdict differs from the recorded one."""

    def __init__(self, result: ClaimResult, note: str = "") -> None:
        super().__init__(result.id)
        self.result, self.note = result, note


class ClaimYamlFile(pytest.File):
    def collect(self) -> Iterator[ClaimItem]:
        state = self.config.stash[_state_key]
        try:
            loaded = load_claim_file(self.path)
        except ClaimFileError as exc:
            raise self.CollectError(str(exc)) from None
        duplicate = check_unique_ids(loaded, state.seen_ids)
        if duplicate is not None:
            raise self.CollectError(str(duplicate))
        for item in loaded:
            yield ClaimItem.from_parent(self, name=item.id, loaded=item)


class ClaimItem(pytest.Item):
    def __init__(self, *, loaded: LoadedClaim, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loaded = loaded
        self.add_marker(loaded.claim.scale)

    def _publish(self, result: ClaimResult) -> ClaimResult:
        self.user_properties.append((_PROPERTY, result.to_dict()))
        return result

    def runtest(self) -> None:
        state = self.config.stash[_state_key]
        reason = skip_reason(self.loaded.claim)
        if reason is not None:
            self._publish(skipped_result(self.loaded, reason))
            # report the skip at the claim's YAML line, not at this line of the plugin
            raise pytest.skip.Exception(reason, _use_item_location=True)
        try:
            tasks = claim_tasks(self.loaded)
        except UnknownExperimentError as exc:
            result = error_result(self.loaded, f"{self.loaded.location}: experiment: {exc}")
        else:
            outcomes = run_tasks(
                tasks.values(), state.cache, workers=self.config.getoption("reprolab_workers")
            )
            result = assemble(self.loaded, tasks, outcomes)
        self._publish(result)
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

    def __init__(self, state: _SessionState) -> None:
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
                state.results.append(_result_from_dict(value))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        state = self.state
        if state.results:
            command = "pytest " + " ".join(session.config.invocation_params.args)
            run = RunInfo.current(command=command, cwd=session.config.rootpath)
            state.history.record(run, state.results)
            state.written = write_reports(
                state.report_dir, run, [r.to_dict() for r in state.results], state.history.verdict_series()
            )
        if self._nightly_failed():
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        state = self.state
        if state.results:
            terminalreporter.section("reprolab claims")
            terminalreporter.write_line(summary_line(state.results))
            if state.written:
                terminalreporter.write_line(f"reports: {state.written[0]} {state.written[1]}")
        if self._nightly_failed():
            terminalreporter.write_line(
                f"{NIGHTLY_ENV}=1: {state.gpu_reports} gpu item(s) reported, {state.gpu_skipped} skipped; "
                "a nightly run in which no gpu claim ran is an error",
                red=True,
            )


def _result_from_dict(data: dict[str, Any]) -> ClaimResult:
    fields = {key: value for key, value in data.items() if key != "matches"}
    for key in ("bounds", "ci", "probability_of_improvement_ci"):
        if fields.get(key) is not None:
            fields[key] = tuple(fields[key])
    return ClaimResult(**fields)
