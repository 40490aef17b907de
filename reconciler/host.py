"""The drivers of this host, wired for a set of host paths (light to import: `podplay ps` and the
no-change check of `up` use it without loading the engine)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from reconciler.drivers.base import Drivers
from reconciler.fsutil import private_dir
from reconciler.paths import HostPaths

ROOTLESS_ENV = "PODPLAY_ROOTLESS"


def open_drivers(paths: HostPaths, kind: str | None = None, *, isolate: bool = False) -> Drivers:
    """The drivers for this host. ``kind="fake"`` (or $PODPLAY_DRIVER=fake) gives the in-memory
    fake persisted under the storage root: the engine's crash tests run real processes on it.

    ``isolate`` (for a keeper, which runs for months) pulls images and unpacks layers in forked
    children, so that the registry client, TLS and OpenSSL are never loaded into the keeper."""
    kind = kind or os.environ.get("PODPLAY_DRIVER", "host")
    # Both roots owner-only (0700): local users must not read images, secret volume files, logs
    # or the state store under them (podman keeps its storage 0700 too). Containers reach what
    # they need through mounts made by root, never through these paths.
    private_dir(paths.root)
    private_dir(paths.runroot)
    if kind == "fake":
        from reconciler.drivers.fake import FakeHost, fake_drivers

        host = FakeHost(paths.root / "fakehost.json")
        if os.environ.get("PODPLAY_FAKE_REGISTRY"):
            host.registry |= set(os.environ["PODPLAY_FAKE_REGISTRY"].split(","))
        return fake_drivers(host)
    from reconciler.network.driver import CniNetwork
    from reconciler.runtime.driver import RuncRuntime
    from reconciler.storage.volumes import HostVolumes

    def make_images():
        from reconciler.images.driver import LocalImageStore

        return LocalImageStore(paths, isolate=isolate)

    def make_snapshots():
        from reconciler.storage.snapshots import OverlaySnapshotter

        return OverlaySnapshotter(paths, images, isolate=isolate)

    from reconciler.network.services import IptablesServices
    from reconciler.store.idranges import PodIdAllocator

    images = _Deferred(make_images)
    # Inside the user's namespace (reconciler.cli.rootless), or an unprivileged user's read-only
    # commands (ps, plan) outside it: the rootless drivers read the same files.
    if os.environ.get(ROOTLESS_ENV) == "1" or os.geteuid() != 0:
        from reconciler.network.slirp import SlirpNetwork

        return Drivers(images=images, snapshots=_DeferredSnapshots(make_snapshots, paths), volumes=HostVolumes(paths),
                       runtime=RuncRuntime(paths, rootless=True), network=SlirpNetwork(paths),
                       close=lambda: images.made and images.close())
    network = CniNetwork(paths)
    id_ranges = PodIdAllocator(paths.state_db)  # hostUsers: false pods' host IDs

    def close():
        id_ranges.close()
        return images.made and images.close()

    return Drivers(images=images, snapshots=_DeferredSnapshots(make_snapshots, paths), volumes=HostVolumes(paths),
                   runtime=RuncRuntime(paths, id_ranges=id_ranges), network=network, close=close,
                   services=IptablesServices(paths, network.list_attachments))


class _Deferred:
    """A driver made on first use: a pass that only relists the host (most `up`s, `ps`) never
    pays for importing the image store (requests) or the snapshotter (tar, zstd)."""

    def __init__(self, make: Callable[[], object]):
        self._make = make
        self._made: object | None = None
        self._lock = threading.Lock()  # first used by steps running side by side: made once

    @property
    def made(self) -> bool:
        return self._made is not None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._made is None:
            with self._lock:
                if self._made is None:
                    self._made = self._make()
        return getattr(self._made, name)


class _DeferredSnapshots(_Deferred):
    """The snapshotter, made on first use; listing its snapshots (every relist, the no-change
    check) needs only directory names and mountinfo (reconciler.storage.listing)."""

    def __init__(self, make: Callable[[], object], paths: HostPaths):
        super().__init__(make)
        self._paths = paths

    def list_snapshots(self):
        from reconciler.storage.listing import list_snapshots

        return list_snapshots(self._paths)
