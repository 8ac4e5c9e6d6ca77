"""One stand-in data folder (smoke scale) for the whole test session: generating it costs tens of seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprolab.rehearse.data import prepare


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("standin")
    return root, prepare(root, "smoke", ["mnist", "gtr", "massive"])
