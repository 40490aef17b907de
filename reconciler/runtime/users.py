"""PURE  which uid, gid and supplementary groups a container process runs with.

The Kubernetes order: the container's ``runAsUser``/``runAsGroup``, else the pod's, else the
image's ``USER`` (``name``, ``uid``, ``uid:gid``, ``name:group``). Names are looked up in the
image's own /etc/passwd and /etc/group, whose text the driver reads from the rootfs (without
following symlinks out of it) and passes in. Supplementary groups are the user's memberships in
/etc/group, then ``supplementalGroups``, then ``fsGroup`` (Kubernetes' "Merge" policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.errors import ContainerRuntimeError

if TYPE_CHECKING:
    from reconciler.desired import DesiredContainer, DesiredPod

MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


@dataclass(frozen=True)
class ResolvedUser:
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    name: str = ""  # "" when the uid has no passwd entry
    home: str = "/"


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _fields(text: str, count: int):
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < count:
            continue
        yield parts


def _int(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 <= value <= MAX_ID else None


def parse_passwd(text: str) -> list[PasswdEntry]:
    out = []
    for p in _fields(text, 7):
        uid, gid = _int(p[2]), _int(p[3])
        if uid is not None and gid is not None:
            out.append(PasswdEntry(p[0], uid, gid, p[5] or "/"))
    return out


def parse_group(text: str) -> list[GroupEntry]:
    out = []
    for p in _fields(text, 4):
        gid = _int(p[2])
        if gid is not None:
            out.append(GroupEntry(p[0], gid, tuple(m.strip() for m in p[3].split(",") if m.strip())))
    return out


def _where(pod: DesiredPod, c: DesiredContainer) -> str:
    return f"{pod.ref}/{c.name}"


def resolve_user(pod: DesiredPod, container: DesiredContainer, image_user: str, passwd: str = "",
                 group: str = "") -> ResolvedUser:
    """Raises ContainerRuntimeError for an unknown user or group name and for runAsNonRoot with uid 0."""
    csc = container.spec.security_context
    psc = pod.spec.security_context
    run_as_user = csc.run_as_user if csc and csc.run_as_user is not None else psc.run_as_user
    run_as_group = csc.run_as_group if csc and csc.run_as_group is not None else psc.run_as_group
    non_root = csc.run_as_non_root if csc and csc.run_as_non_root is not None else psc.run_as_non_root
    users = parse_passwd(passwd)
    groups = parse_group(group)
    where = _where(pod, container)

    for value, what in ((run_as_user, "runAsUser"), (run_as_group, "runAsGroup")):
        if value is not None and not 0 <= value <= MAX_ID:
            raise ContainerRuntimeError(f"{where}: {what} {value} is out of range (0..{MAX_ID})")

    # With runAsUser set the image's USER is ignored entirely, its group part included.
    if run_as_user is not None:
        user_part, group_part = str(run_as_user), ""
    else:
        user_part, _, group_part = (image_user or "").strip().partition(":")
        user_part = user_part or "0"
    uid, entry = _user(user_part, users, where)
    if run_as_group is not None:
        gid = run_as_group
    elif group_part:
        gid = _group(group_part, groups, where)
    else:
        gid = entry.gid if entry else 0

    if non_root and uid == 0:
        if run_as_user is not None:
            raise ContainerRuntimeError(f"{where}: runAsUser is 0 but runAsNonRoot is true; "
                                        "choose a non-zero runAsUser or drop runAsNonRoot")
        raise ContainerRuntimeError(f"{where}: runAsNonRoot is true but the image runs as root "
                                    f"(USER {image_user or 'unset'}); set securityContext.runAsUser")
    name = entry.name if entry else ""
    additional = _supplementary(name, gid, groups, psc, where)
    return ResolvedUser(uid, gid, additional, name, entry.home if entry else "/")


def _user(user_part: str, users: list[PasswdEntry], where: str) -> tuple[int, PasswdEntry | None]:
    """A uid (numeric, known to the image or not) or a name the image's /etc/passwd must know."""
    uid = _int(user_part)
    if uid is not None:
        return uid, next((u for u in users if u.uid == uid), None)
    entry = next((u for u in users if u.name == user_part), None)
    if entry is None:
        raise ContainerRuntimeError(
            f"{where}: the image's USER {user_part!r} is not in the image's /etc/passwd; "
            "set securityContext.runAsUser to a numeric uid or fix the image")
    return entry.uid, entry


def _group(group_part: str, groups: list[GroupEntry], where: str) -> int:
    gid = _int(group_part)
    if gid is not None:
        return gid
    found = next((g for g in groups if g.name == group_part), None)
    if found is None:
        raise ContainerRuntimeError(f"{where}: the image's USER group {group_part!r} is not in the image's /etc/group")
    return found.gid


def _supplementary(name: str, gid: int, groups: list[GroupEntry], psc, where: str) -> tuple[int, ...]:
    """The image's groups that list the user, then supplementalGroups and fsGroup; not `gid` again."""
    extra: list[int] = [g.gid for g in groups if name in g.members] if name else []
    extra += list(psc.supplemental_groups)
    if psc.fs_group is not None:
        extra.append(psc.fs_group)
    for g in extra:
        if not 0 <= g <= MAX_ID:
            raise ContainerRuntimeError(f"{where}: group id {g} is out of range (0..{MAX_ID})")
    return tuple(dict.fromkeys(g for g in extra if g != gid))
