"""Fixtures for the claims-engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# pytester's in-process runs restore sys.modules afterwards; a C extension that the engine imports lazily
# (scipy.special, for intervals) would then be loaded a second time and fail. Import it before any snapshot.
import scipy.special  # noqa: F401


@pytest.fixture
def expectations(tmp_path: Path) -> Path:
    root = tmp_path / "expectations"
    root.mkdir()
    return root
