"""Fixtures for the claims-engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def expectations(tmp_path: Path) -> Path:
    root = tmp_path / "expectations"
    root.mkdir()
    return root
