"""The pytest plugin, driven through pytester: collection, markers, skips, mismatches, updates, reports."""

from __future__ import annotations

import json

import pytest
from claimfiles import PROJECT, SOURCE, claim_yaml, write_note

GPU_CLAIM = claim_yaml("big", verdict="untested").replace("scale: fast", "scale: gpu")
DATA_CLAIM = claim_yaml("needs-data", extra="requires: [REPROLAB_TEST_DATA_DIR]\n")


def _make(pytester: pytest.Pytester, name: str, *claims: str) -> None:
    """A claim file in a reprolab project (pyproject.toml with [tool.reprolab], the cited note)."""
    (pytester.path / "pyproject.toml").write_text(PROJECT)
    write_note(pytester.path)
    pytester.makefile(".yaml", **{f"expectations/{name}": SOURCE + "claims:\n" + "".join(claims)})


@pytest.fixture(autouse=True)
def _no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPROLAB_NO_CUDA", "1")
    monkeypatch.delenv("REPROLAB_NIGHTLY", raising=False)
    monkeypatch.delenv("REPROLAB_TEST_DATA_DIR", raising=False)


def test_claims_are_items_with_markers(pytester: pytest.Pytester) -> None:
    _make(pytester, "a", claim_yaml("ok-one"), GPU_CLAIM, DATA_CLAIM)
    result = pytester.runpytest("-m", "fast", "-rs")
    result.assert_outcomes(passed=1, skipped=1, deselected=1)
    result.stdout.fnmatch_lines(["*needs data: set REPROLAB_TEST_DATA_DIR*"])
    result = pytester.runpytest("-m", "gpu", "-rs")
    result.assert_outcomes(skipped=1, deselected=2)
    result.stdout.fnmatch_lines(["*gpu claim: no CUDA device here*"])


def test_malformed_file_is_a_one_line_collection_error_others_run(pytester: pytest.Pytester) -> None:
    _make(pytester, "good", claim_yaml("fine"))
    _make(pytester, "bad", claim_yaml("bad", extra="colour: blue\n"))
    result = pytester.runpytest("--continue-on-collection-errors")  # as the project's addopts do
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*bad.yaml:*: claims[[]bad[]].colour: unknown key 'colour'*"])


def test_mismatch_message_and_update_verdicts(pytester: pytest.Pytester) -> None:
    _make(pytester, "a", claim_yaml("drifted", verdict="not-reproduced"))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*observed 'reproduced', recorded 'not-reproduced'*",
            "*expected: mean(value) >= 0.5*",
            "*per-seed: 0: 1*",
            "*--update-verdicts*",
        ]
    )
    path = pytester.path / "expectations" / "a.yaml"
    before = path.read_text()
    result = pytester.runpytest("--update-verdicts")
    result.assert_outcomes(failed=1)  # an update is never silently green
    after = path.read_text()
    assert after == before.replace("verdict: not-reproduced", "verdict: reproduced")
    pytester.runpytest().assert_outcomes(passed=1)


def test_error_verdict_fails_with_traceback(pytester: pytest.Pytester) -> None:
    _make(pytester, "a", claim_yaml("boom", experiment="selftest.fails", config="{}"), claim_yaml("fine"))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*observed 'error'*", "*RuntimeError: selftest.fails raised on purpose*"])


def test_reports_and_history_written_by_controller(pytester: pytest.Pytester) -> None:
    _make(pytester, "a", claim_yaml("one"), claim_yaml("two"))
    result = pytester.runpytest("-p", "xdist", "-n", "2")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 claims: 2 reproduced; 0 differ from the record*"])
    report = json.loads((pytester.path / "reports" / "latest.json").read_text())
    assert sorted(c["id"] for c in report["claims"]) == ["one", "two"]
    html = (pytester.path / "reports" / "latest.html").read_text()
    assert "<svg" in html and "a quoted sentence" in html
    assert (pytester.path / ".reprolab" / "history.sqlite").exists()


def test_reportinfo_points_at_claim_line(pytester: pytest.Pytester) -> None:
    _make(pytester, "a", claim_yaml("first"), claim_yaml("second", verdict="refuted"))
    result = pytester.runpytest("-v")
    result.stdout.fnmatch_lines(["*expectations/a.yaml::second*FAILED*"])
    items, _ = pytester.inline_genitems()
    assert [item.reportinfo()[1] for item in items] == [2, 10]


def test_nightly_flag_fails_when_every_gpu_claim_skipped(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make(pytester, "a", claim_yaml("fine"), GPU_CLAIM)
    monkeypatch.setenv("REPROLAB_NIGHTLY", "1")
    result = pytester.runpytest("-m", "gpu")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*REPROLAB_NIGHTLY=1: 1 gpu item(s) reported, 1 skipped*"])
    monkeypatch.delenv("REPROLAB_NIGHTLY")
    assert pytester.runpytest("-m", "gpu").ret == pytest.ExitCode.OK


def test_kind_markers_select_like_the_cli(pytester: pytest.Pytester) -> None:
    recorded = claim_yaml("rec").replace("scale: fast", "scale: fast\n    kind: recorded")
    consistency = claim_yaml("cons").replace("scale: fast", "scale: fast\n    kind: consistency")
    _make(pytester, "a", claim_yaml("plain"), recorded, consistency)
    pytester.runpytest("-m", "consistency").assert_outcomes(passed=1, deselected=2)
    pytester.runpytest("-m", "fast and not recorded").assert_outcomes(passed=2, deselected=1)
    pytester.runpytest("-m", "reproduce").assert_outcomes(passed=1, deselected=2)


def test_unconfigured_project_yaml_is_left_alone(pytester: pytest.Pytester) -> None:
    """Installing reprolab must not take over another project's expectations/ folder."""
    (pytester.path / "pyproject.toml").write_text('[project]\nname = "other"\n')
    pytester.makefile(".yaml", **{"tests/expectations/golden": "whatever: [1, 2]\n"})
    result = pytester.runpytest("tests")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.no_fnmatch_line("*ERROR*")


def test_bad_files_are_collection_errors_others_run(pytester: pytest.Pytester) -> None:
    _make(pytester, "good", claim_yaml("fine"))
    (pytester.path / "expectations" / "binary.yaml").write_bytes(b"\x00\x01\x02")
    (pytester.path / "expectations" / "latin.yaml").write_bytes(b"source: caf\xe9\n")
    result = pytester.runpytest("--continue-on-collection-errors")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*binary.yaml:1: file is binary*", "*latin.yaml:1: not UTF-8 text*"])


@pytest.mark.parametrize(
    "option,value",
    [("--reprolab-workers", "0"), ("--reprolab-workers", "-1"), ("--reprolab-timeout", "0"), ("--reprolab-timeout", "nan")],
)
def test_plugin_options_below_their_range_are_usage_errors(pytester: pytest.Pytester, option: str, value: str) -> None:
    result = pytester.runpytest(option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*argument {option}: must be *, got {value}*"])


def test_reports_that_cannot_be_written_are_a_warning_not_an_internal_error(pytester: pytest.Pytester) -> None:
    _make(pytester, "a", claim_yaml("one"))
    (pytester.path / "taken").write_text("a file of the lab's, where the reports folder would go\n")
    result = pytester.runpytest("--reprolab-reports", "taken")
    result.assert_outcomes(passed=1)
    assert result.ret == 0 and "INTERNALERROR" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*warning: reports not written to taken (File exists*"])
    assert (pytester.path / "taken").read_text().startswith("a file of the lab's")
    assert (pytester.path / ".reprolab" / "history.sqlite").exists()  # the run is still in the history


@pytest.mark.parametrize("xdist", [False, True])
def test_cache_problems_are_warned_in_the_summary(pytester: pytest.Pytester, xdist: bool) -> None:
    # an unwritable cache (here a file where its folder goes) was said by `reprolab check` but never under pytest,
    # where the worker sessions' cache problems were dropped
    _make(pytester, "a", claim_yaml("one"))
    (pytester.path / ".reprolab").mkdir()
    (pytester.path / ".reprolab" / "cache").write_text("not a folder\n")
    result = pytester.runpytest(*(["-p", "xdist", "-n", "2"] if xdist else []))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*warning: cache *cache not written*not cached*"])


def test_a_missing_claims_folder_is_warned(pytester: pytest.Pytester) -> None:
    # claims = ["expectations", "expectatoins"]: the typo'd folder's claims were silently never collected
    _make(pytester, "a", claim_yaml("one"))
    pyproject = pytester.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('claims = ["expectations"]', 'claims = ["expectations", "expectatoins"]'))
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*warning: *pyproject.toml: [[]tool.reprolab[]] claims: no folder *expectatoins*"])
