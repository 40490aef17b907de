"""Where podplay keeps things on the host.

Durable state lives under the storage root (``--root``, ``$PODPLAY_ROOT``, default
``/var/lib/podplay``); volatile state (mounts, runc state, conmon files, CNI allocations)
under the run root (``--runroot``, ``$PODPLAY_RUNROOT``, default ``/run/podplay``) so that
a reboot clears it. Network configuration lives in ``--network-dir`` / ``$PODPLAY_NETWORK_DIR``
(default ``/etc/podplay/net.d``). Every test uses its own trio. An unprivileged user's defaults
are ``$XDG_DATA_HOME/podplay``, ``$XDG_RUNTIME_DIR/podplay`` (or ``<tmp>/podplay-run-<uid>``)
and ``$XDG_CONFIG_HOME/podplay/net.d`` (reconciler.rootless).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostPaths:
    root: Path
    runroot: Path
    network_dir: Path
    # The CNI network of pods that do not name one (podplay.io/network); "" = podplay's own.
    default_network: str = ""
    # podplay's Service range (ClusterIPs), $PODPLAY_SERVICE_CIDR; "" = the root's own, picked at its
    # first Service and recorded (reconciler.reconcile.service_range).
    service_cidr: str = ""

    @classmethod
    def from_env(cls, root: str | None = None, runroot: str | None = None,
                 network_dir: str | None = None, network: str | None = None) -> HostPaths:
        if os.geteuid() == 0:
            defaults = ("/var/lib/podplay", "/run/podplay", "/etc/podplay/net.d")
        else:  # an unprivileged user's own, as podman's (reconciler.rootless)
            from reconciler import rootless

            defaults = (str(rootless.data_dir()), str(rootless.run_dir()), str(rootless.config_dir() / "net.d"))
        return cls(
            Path(root or os.environ.get("PODPLAY_ROOT") or defaults[0]),
            Path(runroot or os.environ.get("PODPLAY_RUNROOT") or defaults[1]),
            Path(network_dir or os.environ.get("PODPLAY_NETWORK_DIR") or defaults[2]),
            network or os.environ.get("PODPLAY_NETWORK") or "",
            os.environ.get("PODPLAY_SERVICE_CIDR", ""),
        )

    @property
    def tag(self) -> str:
        """A short name for this storage root, unique on the host: for what podplay names in
        host-wide namespaces (CNI container ids and so iptables chains, cgroups), where two roots
        running the very same pod (two installations, parallel tests) must not collide."""
        from reconciler import sha

        return "pp" + sha.sha256(os.fsencode(os.path.realpath(self.root))).hexdigest()[:8]

    # durable
    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def lock_file(self) -> Path:
        return self.root / "apply.lock"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def layers(self) -> Path:
        return self.root / "layers"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def claims(self) -> Path:
        return self.root / "volumes"

    @property
    def containers(self) -> Path:
        return self.root / "containers"

    # volatile
    @property
    def runc_root(self) -> Path:
        return self.runroot / "runc"

    @property
    def mounts(self) -> Path:
        return self.runroot / "mounts"

    @property
    def pods_run(self) -> Path:
        return self.runroot / "pods"

    @property
    def conmon(self) -> Path:
        return self.runroot / "conmon"

    @property
    def userns_mounts(self) -> Path:
        """What the containers of hostUsers: false pods mount, staged where their unprivileged
        root can reach it: beside the run root, which is owner-only (see runtime.userns)."""
        return self.runroot.with_name(self.runroot.name + "-userns")

    @property
    def cni(self) -> Path:
        return self.runroot / "cni"
