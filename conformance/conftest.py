"""The conformance suite runs every test against every driver kit that can run here.

The fake kit always runs. The host kit (real registry, runc, conmon, CNI, overlay) needs root,
which CI has; without root the host kit's tests fail rather than hide.
"""

from __future__ import annotations

import pytest

from conformance.kits import FakeKit
from tests.support.host import host_paths  # noqa: F401
from tests.support.network import test_network  # noqa: F401
from tests.support.registry import registry  # noqa: F401


@pytest.fixture(params=["fake", "host"])
def kit(request, tmp_path):
    if request.param == "fake":
        k = FakeKit(tmp_path)
    else:
        from conformance.host_kit import make_host_kit

        k = make_host_kit(request)
    yield k
    k.close()
