"""Test tiers are pytest markers given by directory, so `-m unit` etc. select a tier."""
import pathlib

import pytest

_TIERS = ("unit", "integration", "infra", "e2e")


def pytest_collection_modifyitems(items):
    for item in items:
        parts = pathlib.Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
