"""Project-level pytest configuration.

Tests under ``tests/`` that carry no tier marker are CI tests: mark them ``fast`` so that ``pytest -m fast``
selects unit and property tests together with the fast claims (the claims get their marker from the plugin).
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]  # the claims-engine tests drive pytest itself

_TIERS = ("fast", "gpu", "benchmark")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in _TIERS):
            item.add_marker(pytest.mark.fast)
