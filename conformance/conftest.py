"""The conformance suite runs every test against every driver kit that can run here.

The fake kit always runs. The host kit (real registry, runc, conmon, CNI, overlay) runs when
the process is root; it is defined in conformance/host_kit.py.
"""

from __future__ import annotations

import pytest

from conformance.kits import FakeKit

KITS = ["fake"]  # the host kit joins when the real drivers are wired (conformance/host_kit.py)


@pytest.fixture(params=KITS)
def kit(request, tmp_path):
    if request.param == "fake":
        k = FakeKit(tmp_path)
    else:
        from conformance.host_kit import make_host_kit

        k = make_host_kit(request, tmp_path)
    yield k
    k.close()
