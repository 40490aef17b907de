"""Host tests: root, the real container stack, and a leak check after every test."""

from __future__ import annotations

import os

import pytest

from tests.support.host import host_paths  # noqa: F401

pytestmark = pytest.mark.host


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/host" in str(item.fspath):
            item.add_marker(pytest.mark.host)


@pytest.fixture(autouse=True, scope="session")
def _require_root():
    if os.geteuid() != 0:
        pytest.exit("host tests need root (they mount, make namespaces and run runc)", returncode=4)
