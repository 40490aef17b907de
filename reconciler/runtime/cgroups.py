"""Cgroups a host delegates to a rootless user, and which of the pods' limits they can carry.

Without root, podplay can apply a limit only in a cgroup the user may write. Where to look:

* cgroup v1 (one hierarchy per controller; this VM): for each of memory, pids and cpu, the
  directory ``/sys/fs/cgroup/<controller>/podplay-<uid>`` that root made and gave to the user
  (the directory and its files). Each rootless pod then gets ``<that>/<root tag>/<pod uid>``
  and each container ``…/<pod uid>/<container id>``, as root's pods get under ``podplay/<tag>``.
  A controller root did not delegate is named in a warning; the others are applied.
* cgroup v2 (one hierarchy): the highest cgroup above the user's own (``/proc/self/cgroup``)
  that the user may still write, i.e. the top of the subtree the host delegated (systemd's
  ``user@UID.service``; a directory root made and chowned elsewhere). The controllers it offers
  (its ``cgroup.controllers``) are applied. Each rootless pod gets ``<that>/podplay/<root
  tag>/<pod uid>``, with the controllers switched on down to it, and each container's
  ``cgroupsPath`` is ``…/<pod uid>/<container id>`` (runc makes it and writes the limits there;
  conmon stays in the caller's cgroup). cgroup v2 passes controllers on only from cgroups
  without processes of their own, so a delegated cgroup that holds processes is reported, not
  used.

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
    root: str = ROOT  # where the cgroup filesystem is mounted
    # v1: controller → its podplay-<uid> directory, for those that exist; and those the user may write
    v1_present: Mapping[str, str] = field(default_factory=dict)
    v1_writable: frozenset[str] = frozenset()
    v1_mounted: frozenset[str] = frozenset()  # controllers with a hierarchy of their own
    # v2: the top of the subtree delegated to the user ("" when the user's own cgroup is not
    # writable), the controllers it offers, whether processes sit in it directly; the user's own
    # cgroup, and systemd's user@UID.service when it exists and is the user's (for the hint)
    v2_dir: str = ""
    v2_controllers: frozenset[str] = frozenset()
    v2_busy: bool = False
    v2_own: str = ""
    v2_user_service: str = ""


@dataclass(frozen=True)
class Delegation:
    """``dirs``: controller → the directory under which the pods' cgroups go (the limits of
    those controllers are applied); ``missing``: controller → why it is not applied."""

    version: int
    dirs: Mapping[str, str] = field(default_factory=dict)
    missing: Mapping[str, str] = field(default_factory=dict)
    root: str = ROOT  # the hierarchy's mount point (v2: a container's cgroupsPath is relative to it)

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
        return _decide_v2(p)
    return Delegation(p.version, {}, {c: "no cgroup filesystem is mounted on /sys/fs/cgroup" for c in CONTROLLERS})


def _decide_v2(p: Probed) -> Delegation:
    if not p.v2_dir:
        why = f"the user's cgroup {p.v2_own or '(unknown)'} is not delegated to uid {p.uid} (cgroup v2"
        if p.v2_user_service:
            why += (f"; {p.v2_user_service} is: run podplay inside it, e.g. "
                    "`systemd-run --user --scope podplay …`)")
        else:
            why += ": systemd's Delegate=yes for user@.service, or as root mkdir a cgroup, chown -R it "
            why += "to the user, and move the user's shell into a child of it)"
        return Delegation(2, {}, {c: why for c in CONTROLLERS})
    if p.v2_busy:
        why = (f"cgroup v2 delegates {p.v2_dir} to uid {p.uid}, but processes run in it directly, and cgroup v2 "
               "hands controllers on only from a cgroup without processes: move them into a child cgroup")
        return Delegation(2, {}, {c: why for c in CONTROLLERS})
    top = f"{p.v2_dir}/podplay"
    dirs = {c: top for c in CONTROLLERS if c in p.v2_controllers}
    missing = {c: (f"the {c} controller is not delegated to uid {p.uid} in {p.v2_dir} (systemd: "
                   f"Delegate=memory pids cpu in a drop-in for user@.service)") for c in CONTROLLERS if c not in dirs}
    return Delegation(2, dirs, missing, p.root)


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
        return _probe_v2(uid, root, proc_cgroup)
    mounted = frozenset(c for c in CONTROLLERS if os.path.isdir(f"{root}/{c}"))
    if not mounted:
        return Probed(0, uid)
    present = {c: f"{root}/{c}/{v1_dir_name(uid)}" for c in mounted
               if os.path.isdir(f"{root}/{c}/{v1_dir_name(uid)}")}
    writable = frozenset(c for c, d in present.items() if _writable(d, f"{d}/cgroup.procs"))
    return Probed(1, uid, v1_present=present, v1_writable=writable, v1_mounted=mounted)


def _probe_v2(uid: int, root: str, proc_cgroup: str) -> Probed:
    own = ""
    try:
        with open(proc_cgroup) as f:
            own = next((line.strip()[3:] for line in f if line.startswith("0::")), "")
    except OSError:
        pass
    parts = [x for x in own.split("/") if x and x not in (".", "..")]
    service = f"{root}/user.slice/user-{uid}.slice/user@{uid}.service"
    hint = service if _v2_writable(service) else ""
    top = ""
    # the user's own cgroup, then each parent while the user may write it (never the root)
    for n in range(len(parts), 0, -1):
        d = os.path.join(root, *parts[:n])
        if not _v2_writable(d):
            break
        top = d
    if not top:
        return Probed(2, uid, root, v2_own=os.path.join(root, *parts), v2_user_service=hint)
    try:
        with open(f"{top}/cgroup.controllers") as f:
            offered = frozenset(f.read().split())
        with open(f"{top}/cgroup.procs") as f:
            busy = bool(f.read().split())
    except OSError:
        offered, busy = frozenset(), False
    return Probed(2, uid, root, v2_dir=top, v2_controllers=offered, v2_busy=busy, v2_own=os.path.join(root, *parts),
                  v2_user_service=hint)


def _v2_writable(d: str) -> bool:
    return os.path.isdir(d) and _writable(d, f"{d}/cgroup.procs", f"{d}/cgroup.subtree_control")


def enable_v2(top: str, pod_dir: str, controllers) -> None:
    """Make ``pod_dir`` (below the delegated ``top``) and switch ``controllers`` on in every
    cgroup from ``top`` down to it, so that its children (the containers' cgroups runc makes) get
    them. Raises OSError naming the file that refused."""
    rel = os.path.relpath(pod_dir, top)
    if rel.startswith(".."):
        raise ValueError(f"{pod_dir} is not below {top}")
    line = " ".join(f"+{c}" for c in sorted(controllers))
    d = top
    for part in ["", *rel.split("/")]:
        d = os.path.join(d, part) if part else d
        os.makedirs(d, exist_ok=True)
        if line:
            try:
                with open(f"{d}/cgroup.subtree_control", "w") as f:
                    f.write(line)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot enable {line} in {d}/cgroup.subtree_control: "
                                         f"{exc.strerror}") from None


def delegation() -> Delegation:
    return decide(probe())
