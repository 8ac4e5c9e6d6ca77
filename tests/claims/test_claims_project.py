"""``[tool.reprolab]``: every malformed value is one ProjectConfigError naming pyproject.toml and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

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
