"""Cgroups a host delegates to a rootless user, and which of the pods' limits they can carry.

Without root, podplay can apply a limit only in a cgroup the user may write. Where to look:

* cgroup v1 (one hierarchy per controller; this VM): for each of memory, pids and cpu, the
  directory ``/sys/fs/cgroup/<controller>/podplay-<uid>`` that root made and gave to the user
  (the directory and its files). Each rootless pod then gets ``<that>/<root tag>/<pod uid>``
  and each container ``…/<pod uid>/<container id>``, as root's pods get under ``podplay/<tag>``.
  A controller root did not delegate is named in a warning; the others are applied.
* cgroup v2 (one hierarchy): the user's own cgroup (``/proc/self/cgroup``) when the user may
  write it (systemd's ``Delegate=yes`` for user@.service) and the controllers are offered to a
  child (its ``cgroup.controllers``). It is detected and reported, but podplay does not yet place
  rootless pods in it: the limits are reported as not applied.

``decide`` is pure (unit-tested); ``probe`` reads the host; ``delegation`` is both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

# The controllers behind the limits podplay applies: memory limit and request, pids limit,
# cpu shares and quota.
CONTROLLERS = ("memory", "pids", "cpu")
ROOT = "/sys/fs/cgroup"


def v1_dir_name(uid: int) -> str:
    return f"podplay-{uid}"


@dataclass(frozen=True)
class Probed:
    """What the host shows the user (no decision taken)."""

    version: int  # 1, 2; 0: no cgroup filesystem mounted
    uid: int  # the user's uid on the host
    # v1: controller → its podplay-<uid> directory, for those that exist; and those the user may write
    v1_present: Mapping[str, str] = field(default_factory=dict)
    v1_writable: frozenset[str] = frozenset()
    v1_mounted: frozenset[str] = frozenset()  # controllers with a hierarchy of their own
    # v2: the user's own cgroup directory, whether the user may write it (cgroup.procs and
    # cgroup.subtree_control), and the controllers it can hand to a child
    v2_dir: str = ""
    v2_writable: bool = False
    v2_controllers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Delegation:
    """``dirs``: controller → the directory under which the pods' cgroups go (the limits of
    those controllers are applied); ``missing``: controller → why it is not applied."""

    version: int
    dirs: Mapping[str, str] = field(default_factory=dict)
    missing: Mapping[str, str] = field(default_factory=dict)

    def reason(self, controllers) -> str:
        """One sentence on why ``controllers`` are not applied."""
        reasons = list(dict.fromkeys(self.missing[c] for c in controllers if c in self.missing))
        if self.dirs:  # partial: say which controller each reason is about
            reasons = [f"{', '.join(c for c in controllers if self.missing.get(c) == r)}: {r}" for r in reasons]
        return "; ".join(reasons) or "no cgroup is delegated to this user"


def decide(p: Probed) -> Delegation:
    if p.version == 1:
        dirs: dict[str, str] = {}
        missing: dict[str, str] = {}
        for c in CONTROLLERS:
            path = p.v1_present.get(c, f"{ROOT}/{c}/{v1_dir_name(p.uid)}")
            if c not in p.v1_mounted:
                missing[c] = f"the {c} controller has no cgroup v1 hierarchy of its own on this host"
            elif c in p.v1_writable:
                dirs[c] = path
            elif c in p.v1_present:
                missing[c] = f"{path} is not writable by uid {p.uid} (as root: chown -R {p.uid} {path})"
            else:
                missing[c] = (f"no cgroup is delegated to uid {p.uid} (cgroup v1; as root, for each controller: "
                              f"mkdir {ROOT}/<controller>/{v1_dir_name(p.uid)} and chown -R {p.uid} it; "
                              "see the README, \"Without root\")")
        return Delegation(1, dirs, missing)
    if p.version == 2:
        if not p.v2_writable:
            why = (f"the user's cgroup {p.v2_dir or '(unknown)'} is not delegated to uid {p.uid} (cgroup v2: "
                   "systemd's Delegate=yes for user@.service)")
        else:
            offered = [c for c in CONTROLLERS if c in p.v2_controllers]
            why = (f"cgroup v2 delegates {p.v2_dir} to uid {p.uid}"
                   + (f" with {', '.join(offered)}" if offered else " without the memory, pids and cpu controllers")
                   + ", but podplay places rootless pods in a delegated cgroup only on cgroup v1 for now")
        return Delegation(2, {}, {c: why for c in CONTROLLERS})
    return Delegation(p.version, {}, {c: "no cgroup filesystem is mounted on /sys/fs/cgroup" for c in CONTROLLERS})


def needed(limits: Mapping, requests: Mapping) -> set[str]:
    """The controllers a container's resources ask for (pids: podplay's own limit, always)."""
    out = {"pids"}
    keys = set(limits) | set(requests)
    out |= {c for c in ("memory", "cpu") if c in keys}
    return out


# --- the host ---------------------------------------------------------------------------------

def host_uid() -> int:
    """The user's uid on the host, also from inside the user's own namespace (where it is 0)."""
    try:
        with open("/proc/self/uid_map") as f:
            for line in f:
                inside, outside, _count = (int(x) for x in line.split())
                if inside <= os.geteuid() < inside + _count:
                    return outside + os.geteuid() - inside
    except (OSError, ValueError):
        pass
    return os.geteuid()


def _writable(*paths: str) -> bool:
    return all(os.access(p, os.W_OK) for p in paths)


def probe(uid: int | None = None, root: str = ROOT, proc_cgroup: str = "/proc/self/cgroup") -> Probed:
    uid = host_uid() if uid is None else uid
    if os.path.exists(f"{root}/cgroup.controllers"):
        own = ""
        try:
            with open(proc_cgroup) as f:
                own = next((line.strip()[3:] for line in f if line.startswith("0::")), "")
        except OSError:
            pass
        d = os.path.join(root, own.lstrip("/")) if own else ""
        try:
            with open(f"{d}/cgroup.controllers") as f:
                offered = frozenset(f.read().split())
        except OSError:
            offered = frozenset()
        writable = bool(d) and _writable(d, f"{d}/cgroup.procs", f"{d}/cgroup.subtree_control")
        return Probed(2, uid, v2_dir=d, v2_writable=writable, v2_controllers=offered)
    mounted = frozenset(c for c in CONTROLLERS if os.path.isdir(f"{root}/{c}"))
    if not mounted:
        return Probed(0, uid)
    present = {c: f"{root}/{c}/{v1_dir_name(uid)}" for c in mounted
               if os.path.isdir(f"{root}/{c}/{v1_dir_name(uid)}")}
    writable = frozenset(c for c, d in present.items() if _writable(d, f"{d}/cgroup.procs"))
    return Probed(1, uid, v1_present=present, v1_writable=writable, v1_mounted=mounted)


def delegation() -> Delegation:
    return decide(probe())
