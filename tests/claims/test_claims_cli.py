"""The reprolab CLI: check / list / report / history, exit codes and marker selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from claimfiles import claim_yaml, write_claims
from click.testing import CliRunner

from reprolab.claims.selection import compile_marker_expression
from reprolab.cli import cli


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "expectations").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REPROLAB_NO_CUDA", "1")
    return tmp_path


def test_check_prints_ledger_writes_reports_and_history(project: Path) -> None:
    write_claims(
        project / "expectations", "a.yaml", claim_yaml("alpha"), claim_yaml("beta", verdict="refuted")
    )
    runner = CliRunner()
    result = runner.invoke(cli, ["check"])
    assert result.exit_code == 1, result.output
    assert "alpha" in result.output and "beta" in result.output
    assert "1 differ from the record" in result.output
    assert "--update-verdicts" in result.output
    payload = json.loads((project / "reports" / "latest.json").read_text())
    assert {c["id"]: c["matches"] for c in payload["claims"]} == {"alpha": True, "beta": False}

    result = runner.invoke(cli, ["check", "-k", "alpha"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(cli, ["list"])
    assert listed.exit_code == 0 and "reproduced" in listed.output
    history = runner.invoke(cli, ["history", "alpha"])
    assert history.exit_code == 0 and history.output.count("reproduced") >= 4
    assert runner.invoke(cli, ["report"]).exit_code == 0
    assert runner.invoke(cli, ["history", "nope"]).exit_code == 1


def test_history_and_list_name_the_failed_guard_and_its_value(project: Path) -> None:
    guard = "valid_when:\n  - {metric: value, statistic: min, at_most: 0.5, why: the regime}\n"
    write_claims(project / "expectations", "a.yaml", claim_yaml("guarded", verdict="inconclusive", extra=guard))
    runner = CliRunner()
    assert runner.invoke(cli, ["check"]).exit_code == 0
    history = runner.invoke(cli, ["history", "guarded"])
    assert history.exit_code == 0 and "inconclusive" in history.output
    assert "guard min(value) <= 0.5 FAILED: 1" in " ".join(history.output.split()), history.output
    listed = runner.invoke(cli, ["list"])
    assert listed.exit_code == 0 and "inconclusive" in listed.output
    assert "guard min(value) <= 0.5 FAILED: 1" in " ".join(listed.output.split()), listed.output


def test_update_verdicts_rewrites_only_the_value(project: Path) -> None:
    path = write_claims(project / "expectations", "a.yaml", claim_yaml("beta", verdict="refuted"))
    path.write_text(path.read_text().replace("verdict: refuted", "verdict: refuted   # was checked by hand"))
    result = CliRunner().invoke(cli, ["check", "--update-verdicts"])
    assert result.exit_code == 1
    assert "verdict: reproduced   # was checked by hand" in path.read_text()
    assert CliRunner().invoke(cli, ["check"]).exit_code == 0


def test_bad_file_reported_and_valid_ones_still_run(project: Path) -> None:
    write_claims(project / "expectations", "a.yaml", claim_yaml("alpha"))
    (project / "expectations" / "b.yaml").write_text("source: {document: x, title: y}\nclaims: []\n")
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2
    assert "b.yaml:2: claims:" in result.output and "alpha" in result.output
    # a verdict that differs too: still 2 (a malformed file wins), and the mismatch is still shown
    write_claims(project / "expectations", "c.yaml", claim_yaml("gamma", verdict="refuted"))
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2 and "b.yaml:2: claims:" in result.output and "gamma" in result.output


def test_marker_selection(project: Path) -> None:
    write_claims(
        project / "expectations",
        "a.yaml",
        claim_yaml("alpha"),
        claim_yaml("gamma", verdict="untested").replace("scale: fast", "scale: gpu"),
    )
    result = CliRunner().invoke(cli, ["check", "-m", "gpu"])
    assert result.exit_code == 0 and "gamma" in result.output and "alpha" not in result.output
    assert "no CUDA" in result.output
    assert CliRunner().invoke(cli, ["check", "-m", "fast and ("]).exit_code == 2


@pytest.mark.parametrize(
    ("expression", "markers", "expected"),
    [
        ("fast", {"fast", "reproduce"}, True),
        ("not gpu", {"fast"}, True),
        ("fast and not recorded", {"fast", "recorded"}, False),
        ("(gpu or fast) and consistency", {"gpu", "consistency"}, True),
    ],
)
def test_marker_expressions(expression: str, markers: set[str], expected: bool) -> None:
    assert compile_marker_expression(expression)(markers) is expected


@pytest.mark.parametrize("bad", ["fast +", "__import__('os')", "fast(1)", "a.b"])
def test_marker_expression_rejects_anything_else(bad: str) -> None:
    with pytest.raises(ValueError):
        compile_marker_expression(bad)


def test_report_since_filters_runs(project: Path) -> None:
    write_claims(project / "expectations", "a.yaml", claim_yaml("alpha"))
    runner = CliRunner()
    assert runner.invoke(cli, ["check"]).exit_code == 0
    assert runner.invoke(cli, ["report", "--since", "2000-01-01"]).exit_code == 0
    late = runner.invoke(cli, ["report", "--since", "2999-01-01"])
    assert late.exit_code == 1 and "no runs since 2999-01-01" in late.output and "holds older runs" in late.output
    # the history compares ISO strings: anything else would silently match nothing
    bad = runner.invoke(cli, ["report", "--since", "last tuesday"])
    assert bad.exit_code == 2 and "neither a git revision here nor an ISO date" in bad.output
    # an offset is converted to the history's UTC (17:00+02:00 is 15:00 UTC: before the run, so it is kept)
    assert runner.invoke(cli, ["report", "--since", "2000-01-01T17:00+02:00"]).exit_code == 0


def test_init_scaffolds_a_project_whose_example_claim_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = tmp_path / "my-lab"
    runner = CliRunner()
    result = runner.invoke(cli, ["init", str(lab)])
    assert result.exit_code == 0, result.output
    assert (lab / "my_lab" / "experiments.py").exists() and (
        lab / ".github" / "workflows" / "claims.yml"
    ).exists()
    assert "[tool.reprolab]" in (lab / "pyproject.toml").read_text()
    again = runner.invoke(cli, ["init", str(lab)])
    assert again.exit_code == 0 and "exists, left alone: claims/coin.yaml" in again.output
    monkeypatch.chdir(lab)
    checked = runner.invoke(cli, ["check"])
    assert checked.exit_code == 0, checked.output
    assert "1 claims: 1 reproduced; 0 differ" in checked.output


def test_init_appends_to_an_existing_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert CliRunner().invoke(cli, ["init", str(tmp_path), "--package", "xlab"]).exit_code == 0
    text = (tmp_path / "pyproject.toml").read_text()
    assert text.startswith('[project]\nname = "x"\n') and 'experiments = ["xlab.experiments"]' in text


def test_init_names_the_table_it_added_or_left_alone(tmp_path: Path) -> None:
    """The lines name "[tool.reprolab]" (rich markup, printed as nothing unless escaped)."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    first = CliRunner().invoke(cli, ["init", str(tmp_path), "--package", "xlab"])
    assert "added [tool.reprolab] to pyproject.toml" in first.output, first.output
    again = CliRunner().invoke(cli, ["init", str(tmp_path), "--package", "xlab"])
    assert "exists, left alone: [tool.reprolab] in pyproject.toml" in again.output, again.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["check", "-n", "0"], "is not in the range x>=1"),
        (["check", "-n", "-2"], "is not in the range x>=1"),
        (["history", "demo", "--limit", "0"], "is not in the range x>=1"),
        (["check", "--timeout", "nan"], "must be a finite number of seconds"),  # NaN passes FloatRange
    ],
)
def test_out_of_range_options_are_usage_errors_not_silently_accepted(project: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize(
    "text",
    [
        '[project]\nname = "x"\n\n[tool]\nreprolab = {claims = ["expectations"]}\n',  # the table, spelt inline
        '[project]\nname = "x"\n\n[ tool.reprolab ]\nclaims = ["expectations"]\n',  # spaces inside the brackets
        '[project]\nname = "x"\n\n[tool."reprolab"]\nclaims = ["expectations"]\n',  # a quoted key
    ],
)
def test_init_finds_an_existing_reprolab_table_however_it_is_written(tmp_path: Path, text: str) -> None:
    (tmp_path / "pyproject.toml").write_text(text)
    result = CliRunner().invoke(cli, ["init", str(tmp_path), "--package", "xlab"])
    assert result.exit_code == 0 and "exists, left alone: [tool.reprolab]" in result.output, result.output
    assert (tmp_path / "pyproject.toml").read_text() == text


@pytest.mark.parametrize(
    "data,reason",
    [(b'[project\nname = "x"\n', "cannot read"), (b"\xff\xfe[\x00p\x00", "cannot read"), (b"tool = 3\n", "tool must be a table")],
)
def test_init_leaves_an_unreadable_pyproject_alone_and_writes_nothing(tmp_path: Path, data: bytes, reason: str) -> None:
    (tmp_path / "pyproject.toml").write_bytes(data)
    result = CliRunner().invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"pyproject.toml: {reason}" in result.output and "left it alone" in result.output
    assert (tmp_path / "pyproject.toml").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pyproject.toml"]


def test_init_never_replaces_a_symlink(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    (lab / "claims").mkdir(parents=True)
    (lab / "claims" / "coin.yaml").symlink_to(tmp_path / "elsewhere.yaml")  # dangling: exists() is False
    (tmp_path / "shared.toml").write_text('[project]\nname = "x"\n')
    (lab / "pyproject.toml").symlink_to(tmp_path / "shared.toml")
    result = CliRunner().invoke(cli, ["init", str(lab), "--package", "xlab"])
    assert result.exit_code == 0, result.output
    assert "exists, left alone: claims/coin.yaml" in result.output
    assert (lab / "claims" / "coin.yaml").is_symlink() and not (tmp_path / "elsewhere.yaml").exists()
    assert (lab / "pyproject.toml").is_symlink()  # the table went into the file it points at
    assert "[tool.reprolab]" in (tmp_path / "shared.toml").read_text()


@pytest.mark.parametrize("command", [["report"], ["list"], ["history", "alpha"]])
def test_a_damaged_history_moved_aside_is_said_by_the_reading_commands(project: Path, command: list[str]) -> None:
    # report/list/history moved a damaged history.sqlite aside silently: the user saw only "no runs ... yet"
    write_claims(project / "expectations", "a.yaml", claim_yaml("alpha"))
    (project / ".reprolab").mkdir()
    (project / ".reprolab" / "history.sqlite").write_bytes(b"not a database" * 100)
    result = CliRunner().invoke(cli, command)
    assert "was unreadable" in result.output and "moved it to history.sqlite.corrupt-" in result.output, result.output
