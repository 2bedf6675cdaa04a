"""Shared fixtures; test tiers are pytest markers given by directory, so `-m unit` etc. select a tier."""
import pathlib

import pytest

from tests import local_stack

_TIERS = ("unit", "integration", "infra", "e2e")


def pytest_collection_modifyitems(items):
    for item in items:
        parts = pathlib.Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def local_raw() -> dict:
    """The committed local stack config, keys without the namespace (a fresh copy per test)."""
    return local_stack.raw()


@pytest.fixture(scope="session")
def progress(pytestconfig):
    """progress(tag, line): a line for the terminal from inside a test or a slow fixture
    (timings), past pytest's capture."""
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")

    def line(tag: str, text: str) -> None:
        if capture and reporter:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"[{tag}] {text}")
    return line
