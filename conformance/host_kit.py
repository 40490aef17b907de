"""The real drivers as a conformance kit: docker-registry, image store, overlay, runc, conmon, CNI.

Built from the same fixtures as the host tests (a registry per xdist worker, a fresh storage
root and run root checked for leaks afterwards, a CNI network of the test's own), so the suite
runs on the real stack exactly as it runs on the fake.
"""

from __future__ import annotations

from conformance.kits import Kit


class HostKit(Kit):
    name = "host"

    def __init__(self, request):
        from reconciler.reconcile import open_drivers
        from tests.support.images import factory
        from tests.support.network import free_port

        self._free_port = free_port
        self.paths = request.getfixturevalue("host_paths")
        request.getfixturevalue("test_network").use_as_default()
        self._image = factory().push_cached(request.getfixturevalue("registry")).ref
        self._open = lambda: open_drivers(self.paths, "host")
        self.drivers = self._open()

    def image(self) -> str:
        return self._image

    def free_port(self) -> int:
        return self._free_port()

    def reopen(self):
        self.drivers.close()
        self.drivers = self._open()
        return self.drivers

    def close(self) -> None:
        """Remove whatever a failed test left, through the drivers (the fixtures check for leaks)."""
        from tests.support.host import remove_everything

        remove_everything(self.drivers)


def make_host_kit(request) -> HostKit:
    return HostKit(request)
