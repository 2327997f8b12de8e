"""The reliability suites: ``soak``-marked tests run only under ``make soak``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rel_testkit import SOAK  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SOAK:
        return
    skip = pytest.mark.skip(reason="soak run only (make soak)")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)
