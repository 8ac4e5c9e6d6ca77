"""``[tool.reprolab]``: every malformed value is one ProjectConfigError naming pyproject.toml and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from labproject import build_lab

from reprolab.claims.project import ProjectConfigError, find_project
from reprolab.cli import cli


@pytest.mark.parametrize("text", ["tool = 3\n", 'tool = "reprolab"\n', "tool = [1]\n"])
def test_a_tool_key_that_is_not_a_table_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(ProjectConfigError, match=r"pyproject.toml: tool must be a table"):
        find_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 2 and "tool must be a table" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    "key,value",
    [("state", '"/"'), ("reports", '"../elsewhere"'), ("reports", '"/tmp/x"'), ("state", '"sub/../../up"')],
)
def test_paths_leading_out_of_the_project_are_refused(tmp_path: Path, key: str, value: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.reprolab]\n{key} = {value}\n")
    with pytest.raises(ProjectConfigError, match=rf"pyproject.toml: \[tool.reprolab\]: {key} must be a path inside"):
        find_project(tmp_path)


def test_folders_only_read_may_lie_outside_the_project(tmp_path: Path) -> None:
    # a lab's notes in a sibling repository, claims shared between projects: reprolab never writes there
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "pyproject.toml").write_text('[tool.reprolab]\nnotes = "../shared/notes"\nclaims = ["/abs/claims"]\n')
    project = find_project(tmp_path / "lab")
    assert project.notes == (tmp_path / "lab").resolve() / "../shared/notes"
    assert project.claims == (Path("/abs/claims"),)


def test_paths_inside_the_project_are_kept(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.reprolab]\nstate = "./build/../.state"\nclaims = ["a/b"]\n')
    project = find_project(tmp_path)
    assert project.state == tmp_path.resolve() / "build/../.state" and project.claims == (tmp_path.resolve() / "a/b",)


def test_a_configured_claims_folder_that_does_not_exist_is_an_error_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = build_lab(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('claims = ["claims"]', 'claims = ["claims", "cliams-gpu"]'))
    monkeypatch.chdir(root)
    for command in (["check"], ["list"], ["audit"], ["summary"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2, (command, result.output)
        assert "[tool.reprolab] claims: no folder" in result.output and "cliams-gpu" in result.output
    # naming paths explicitly still works
    assert CliRunner().invoke(cli, ["list", "claims"]).exit_code == 0
